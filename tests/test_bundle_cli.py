"""`k3s-netpol bundle render|validate`: output, settings, exit codes and messages."""

import yaml
from click.testing import CliRunner

from k3s_netpol.cli import main


def run(*args, stdin=None):
    return CliRunner().invoke(main, ["bundle", *args], input=stdin)


def test_render_prints_the_default_bundle():
    result = run("render")
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.stdout))
    namespaces = {d["metadata"].get("namespace") for d in documents if d["kind"] == "NetworkPolicy"}
    assert namespaces == {"sample1", "sample2"}


def test_render_namespace_options_replace_the_settings(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("namespaces: [x]\nsample_workload: false\nnflog_limit: 2/m\n")
    result = run("render", "--config", str(settings), "-n", "team-a", "-n", "team-b")
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.stdout))
    assert {d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"} == {
        "team-a",
        "team-b",
    }
    assert not [d for d in documents if d["kind"] == "Deployment"]
    policy = next(d for d in documents if d["kind"] == "NetworkPolicy")
    assert policy["metadata"]["annotations"]["kube-router.io/netpol-nflog-limit"] == "2/m"


def test_render_reads_prefixed_settings_from_stdin():
    result = run(
        "render",
        "--config",
        "-",
        "--key-prefix",
        "netpol_bundle_",
        stdin='{"netpol_bundle_namespaces": ["z"], "netpol_bundle_nflog_limit_burst": null}',
    )
    assert result.exit_code == 0, result.output
    assert "namespace: z" in result.stdout


def test_render_bad_setting_exits_2_naming_the_variable():
    result = run(
        "render",
        "--config",
        "-",
        "--key-prefix",
        "netpol_bundle_",
        stdin='{"netpol_bundle_nflog_limit": "10/minutes"}',
    )
    assert result.exit_code == 2
    assert "variables: netpol_bundle_nflog_limit: kube-router.io/netpol-nflog-limit:" in (
        result.stderr
    )
    assert result.stdout == ""


def test_render_bad_namespace_option_exits_2():
    result = run("render", "-n", "Not_A_Namespace")
    assert result.exit_code == 2
    assert "namespaces[0]" in result.stderr


def test_render_missing_settings_file_exits_2(tmp_path):
    result = run("render", "--config", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert "missing.yaml" in result.stderr


def test_render_output_file_is_written_only_when_it_changes(tmp_path):
    output = tmp_path / "out" / "bundle.yaml"
    first = run("render", "-o", str(output))
    assert first.exit_code == 0
    assert "written" in first.stderr
    stamp = output.stat().st_mtime_ns
    second = run("render", "-o", str(output))
    assert "unchanged" in second.stderr
    assert output.stat().st_mtime_ns == stamp
    assert oct(output.stat().st_mode & 0o777) == "0o644"
    third = run("render", "-n", "other", "-o", str(output))
    assert "written" in third.stderr
    assert "namespace: other" in output.read_text()


def test_validate_reports_every_file_and_exits_2_when_one_is_bad(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(run("render").stdout)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n"
        "  annotations:\n    kube-router.io/netpol-nflog-limit: lots\nspec:\n  podSelector: {}\n"
    )
    result = run("validate", str(good), str(bad))
    assert result.exit_code == 2
    assert "good.yaml: valid (16 objects)" in result.stdout
    assert "bad.yaml: document 1 (NetworkPolicy p): metadata.annotations" in result.stderr
    assert run("validate", str(good)).exit_code == 0


def test_validate_reads_stdin():
    result = run("validate", "-", stdin=run("render").stdout)
    assert result.exit_code == 0
    assert "-: valid" in result.stdout
