"""The netpol_bundle role's render entry point, run by ansible-playbook on localhost.

playbooks/policies.yml renders on localhost and applies on server[0]; with a localhost-only
inventory the apply play matches no host, so this exercises exactly the controller side.
"""

import pytest
import yaml
from ansible_localhost import ANSIBLE_PLAYBOOK, ROOT, run_playbook

PLAYBOOK = ROOT / "playbooks" / "policies.yml"

pytestmark = pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in venv"
)


def play(artifacts, *args):
    run = run_playbook(PLAYBOOK, artifacts, *args)
    return run, run.changed, run.failed


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The playbook run twice into one artifacts directory: the results of both runs."""
    artifacts = tmp_path_factory.mktemp("role") / "artifacts"
    namespaces = ("-e", '{"netpol_bundle_namespaces": ["team-a"]}')
    return artifacts, play(artifacts, *namespaces), play(artifacts, *namespaces)


def test_render_writes_the_bundle_and_is_idempotent(rendered):
    artifacts, (first, changed, failed), (second, changed_again, failed_again) = rendered
    assert (changed, failed) == (2, 0), first.stdout
    bundle = artifacts / "bundle.yaml"
    documents = list(yaml.safe_load_all(bundle.read_text()))
    assert {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"} == {
        "team-a"
    }
    assert oct(bundle.stat().st_mode & 0o777) == "0o644"
    assert (changed_again, failed_again) == (0, 0), second.stdout


def test_check_mode_reports_the_change_and_writes_nothing(tmp_path):
    artifacts = tmp_path / "artifacts"
    completed, changed, failed = play(artifacts, "--check", "--diff")
    assert failed == 0, completed.stdout
    assert changed >= 1
    assert not (artifacts / "bundle.yaml").exists()


@pytest.mark.parametrize(
    ("extra_vars", "named"),
    [
        # Checked by the renderer (kube-router's grammar, RFC 1123 names).
        ('{"netpol_bundle_nflog_limit": "10/minutes"}', "netpol_bundle_nflog_limit:"),
        ('{"netpol_bundle_namespaces": ["Team_A"]}', "netpol_bundle_namespaces[0]:"),
        # Checked by meta/argument_specs.yml before any task runs.
        ('{"netpol_bundle_nflog_limit_burst": "abc"}', "'netpol_bundle_nflog_limit_burst'"),
    ],
)
def test_bad_variables_fail_naming_the_variable_and_leave_the_bundle(rendered, extra_vars, named):
    artifacts = rendered[0]
    before = (artifacts / "bundle.yaml").read_text()
    completed, _, failed = play(artifacts, "-e", extra_vars)
    assert failed == 1
    assert named in completed.stdout + completed.stderr
    assert (artifacts / "bundle.yaml").read_text() == before
