"""Every command the roles hand to kubectl, run by ansible-playbook against a real kubectl.

Each test runs a role's own task file on localhost (include_role with tasks_from, or the whole
role), so the arguments kubectl gets are the ones the role builds; only the program is swapped:
the role's kubectl (`k3s kubectl`, which cannot be had here) becomes the kubectl binary found here
with a kubeconfig for tests/recorded_kube_api.py, an API endpoint on 127.0.0.1 that answers from
recorded responses. A quoting or jsonpath mistake in a role fails here as it would on a cluster.

kubectl: $K3S_NETPOL_KUBECTL (one or more paths separated by ':'), else `kubectl` on PATH
(Debian's kubernetes-client, which scripts/setup.sh installs where no kubectl is present).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from recorded_kube_api import RecordedKubeAPI, recorded, serving

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
RECAP = re.compile(
    r"^localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", re.M
)
NODE = "server-1"


def kubectl_binaries() -> list[str]:
    listed = os.environ.get("K3S_NETPOL_KUBECTL", "")
    if listed:
        return [path for path in listed.split(os.pathsep) if path]
    found = shutil.which("kubectl")
    return [found] if found else []


KUBECTLS = kubectl_binaries()

pytestmark = [
    pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook is not in the venv"),
    pytest.mark.skipif(
        not KUBECTLS,
        reason="no kubectl: install Debian's kubernetes-client (scripts/setup.sh does) or set "
        "K3S_NETPOL_KUBECTL to a kubectl binary",
    ),
]


def kubectl_version(kubectl: str) -> str:
    completed = subprocess.run(
        [kubectl, "version", "--client", "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return str(json.loads(completed.stdout)["clientVersion"]["gitVersion"])
    except (ValueError, KeyError):
        return "unknown"


@pytest.fixture(params=KUBECTLS, ids=[f"kubectl-{kubectl_version(k)}" for k in KUBECTLS])
def kubectl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Cluster:
    """The recorded API served on 127.0.0.1, with ansible-playbook runs against it."""

    def __init__(self, api: RecordedKubeAPI, kubeconfig: Path, kubectl: str, work: Path) -> None:
        self.api = api
        self.kubeconfig = kubeconfig
        self.kubectl = kubectl
        self.work = work

    @property
    def kubectl_argv(self) -> list[str]:
        return [self.kubectl, "--kubeconfig", str(self.kubeconfig)]

    def play(
        self, tasks: list[dict[str, Any]], extra_vars: dict[str, Any], *options: str
    ) -> tuple[subprocess.CompletedProcess[str], int, int]:
        playbook = self.work / "playbook.yml"
        playbook.write_text(
            yaml.safe_dump(
                [
                    {
                        "name": "Run a role's kubectl tasks",
                        "hosts": "localhost",
                        "gather_facts": False,
                        "tasks": tasks,
                    }
                ]
            )
        )
        variables = self.work / "vars.json"
        # The venv's Python for modules, not whatever `python3` interpreter discovery finds first.
        variables.write_text(
            json.dumps({"ansible_python_interpreter": sys.executable, **extra_vars})
        )
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "K3S_NETPOL_ARTIFACTS_DIR": str(self.work / "artifacts"),
        }
        completed = subprocess.run(
            [
                str(ANSIBLE_PLAYBOOK),
                "-i",
                "localhost,",
                "-c",
                "local",
                str(playbook),
                "-e",
                f"@{variables}",
                *options,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        recap = RECAP.search(completed.stdout)
        assert recap, completed.stdout + completed.stderr
        _ok, changed, failed = (int(group) for group in recap.groups())
        return completed, changed, failed


@pytest.fixture
def cluster(kubectl: str, tmp_path: Path) -> Iterator[Cluster]:
    api = RecordedKubeAPI()
    api.add(*recorded("namespaces.json"))
    kubeconfig = tmp_path / "kubeconfig"
    with serving(api, kubeconfig):
        yield Cluster(api, kubeconfig, kubectl, tmp_path)


# roles/k3s tasks/node-ready.yml: the wait for Ready (the blocker of issue 9).


def wait_for_ready(
    cluster: Cluster, **overrides: Any
) -> tuple[subprocess.CompletedProcess[str], int]:
    extra_vars = {
        "__k3s_kubectl_argv": cluster.kubectl_argv,
        "k3s_node_role": "server",
        "k3s_server_config": {"node-name": NODE},
        "k3s_node_ready_timeout": 1,
        **overrides,
    }
    task = {
        "name": "Wait for Ready",
        "ansible.builtin.include_role": {"name": "k3s", "tasks_from": "node-ready"},
    }
    completed, _changed, failed = cluster.play([task], extra_vars)
    return completed, failed


def test_the_ready_wait_reads_a_ready_node(cluster: Cluster) -> None:
    cluster.api.add(recorded("node-ready.json"))
    completed, failed = wait_for_ready(cluster)
    assert failed == 0, completed.stdout
    assert ("GET", f"/api/v1/nodes/{NODE}", {}) in [
        (method, path, {k: v for k, v in query.items() if k != "timeout"})
        for method, path, query in cluster.api.requests
    ]


def test_the_ready_wait_names_a_node_that_is_not_ready_and_why(cluster: Cluster) -> None:
    cluster.api.add(recorded("node-not-ready.json"))
    completed, failed = wait_for_ready(cluster)
    assert failed == 1
    assert (
        f"Node {NODE} (localhost) is not Ready after 1 s: Ready=False (KubeletNotReady:"
        in completed.stdout
    )
    assert "cni plugin not initialized" in completed.stdout


def test_the_ready_wait_names_a_node_the_api_does_not_know(cluster: Cluster) -> None:
    completed, failed = wait_for_ready(cluster)
    assert failed == 1
    assert (
        f'`kubectl get node` said: Error from server (NotFound): nodes "{NODE}" not found'
        in completed.stdout
    )


# roles/netpol_verify tasks/inputs-kubectl.yml: the cluster snapshot.


def test_the_verify_snapshot_reads_namespaces_pods_and_policies(cluster: Cluster) -> None:
    cluster.api.add(recorded("pod-sample1-nginx.json"))
    task = {
        "name": "Read the snapshot",
        "ansible.builtin.include_role": {"name": "netpol_verify", "tasks_from": "inputs-kubectl"},
    }
    show = {
        "name": "Show the pods",
        "ansible.builtin.debug": {"msg": "{{ netpol_verify__pod_ips | to_json }}"},
    }
    completed, _changed, failed = cluster.play(
        [task, show],
        {
            "netpol_verify_kubectl": cluster.kubectl_argv,
            "netpol_verify_node_hosts": {NODE: "localhost"},
            "netpol_verify_namespaces": [],
            "netpol_verify_controller_python": sys.executable,
        },
    )
    assert failed == 0, completed.stdout + completed.stderr
    assert '"sample1/nginx-5869d7778c-x7k2p": "10.42.0.9"' in completed.stdout
    paths = {path for method, path, _ in cluster.api.requests if method == "GET"}
    assert {
        "/api/v1/namespaces",
        "/api/v1/pods",
        "/apis/networking.k8s.io/v1/networkpolicies",
    } <= paths


# roles/netpol_bundle: namespaces, diff, apply.


def apply_bundle(
    cluster: Cluster, *options: str
) -> tuple[subprocess.CompletedProcess[str], int, int]:
    task = {"name": "Apply the bundle", "ansible.builtin.include_role": {"name": "netpol_bundle"}}
    return cluster.play(
        [task],
        {
            "netpol_bundle_kubectl": [cluster.kubectl],
            "netpol_bundle_kubeconfig": str(cluster.kubeconfig),
            "netpol_bundle_remote_dir": str(cluster.work / "applied"),
            "netpol_bundle_api_timeout": 2,
        },
        *options,
    )


def test_the_bundle_is_checked_then_applied_then_left_alone(cluster: Cluster) -> None:
    checked, changed, failed = apply_bundle(cluster, "--check", "--diff")
    assert failed == 0, checked.stdout + checked.stderr
    assert cluster.api.get("v1", "Namespace", "sample1") is None
    assert any(
        method == "POST" and path == "/api/v1/namespaces" and query.get("dryRun") == ["All"]
        for method, path, query in cluster.api.requests
    ), "check mode should ask the API server for a dry run of the namespace"

    applied, changed, failed = apply_bundle(cluster)
    assert failed == 0, applied.stdout + applied.stderr
    assert changed >= 1
    policy = cluster.api.get("networking.k8s.io/v1", "NetworkPolicy", "deny-by-default", "sample1")
    assert policy is not None
    assert policy["spec"]["podSelector"] == {}
    assert cluster.api.get("apps/v1", "Deployment", "nginx", "sample2") is not None

    again, changed, failed = apply_bundle(cluster, "--diff")
    assert (changed, failed) == (0, 0), again.stdout
    assert not any(
        method == "PATCH" and "dryRun" not in query
        for method, _, query in cluster.api.requests[-40:]
    )


def test_a_changed_policy_is_shown_by_diff_and_applied(cluster: Cluster) -> None:
    applied, _changed, failed = apply_bundle(cluster)
    assert failed == 0, applied.stdout + applied.stderr
    policy = cluster.api.get(
        "networking.k8s.io/v1", "NetworkPolicy", "allow-same-namespace", "sample1"
    )
    policy["spec"]["ingress"] = []
    completed, changed, failed = apply_bundle(cluster, "--diff")
    assert failed == 0, completed.stdout
    assert changed == 1
    assert "networking.k8s.io.v1.NetworkPolicy.sample1.allow-same-namespace" in completed.stdout
    restored = cluster.api.get(
        "networking.k8s.io/v1", "NetworkPolicy", "allow-same-namespace", "sample1"
    )
    assert restored["spec"]["ingress"] != []
