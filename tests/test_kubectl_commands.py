"""Every command the roles hand to kubectl, run by ansible-playbook against a real kubectl.

Each test runs a role's own task file on localhost (include_role with tasks_from, or the whole
role), so the arguments kubectl gets are the ones the role builds; only the program is swapped:
the role's kubectl (`k3s kubectl`, which cannot be had here) becomes the kubectl binary found here
with a kubeconfig for tests/recorded_kube_api.py, an API endpoint on 127.0.0.1 that answers from
stored responses in the API server's shape (written by hand: no API server runs here). A quoting
or jsonpath mistake in a role fails here as it would on a cluster.

kubectl: $K3S_NETPOL_KUBECTL (one or more paths separated by ':'), else `kubectl` on PATH
(Debian's kubernetes-client, which scripts/setup.sh installs where no kubectl is present).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible_localhost import ANSIBLE_PLAYBOOK, Run, include_role, run_tasks
from recorded_kube_api import RecordedKubeAPI, recorded, serving

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
    """The stored API served on 127.0.0.1, and the kubectl that talks to it."""

    def __init__(self, api: RecordedKubeAPI, kubeconfig: Path, kubectl: str, work: Path) -> None:
        self.api = api
        self.kubeconfig = kubeconfig
        self.kubectl = kubectl
        self.work = work

    @property
    def kubectl_argv(self) -> list[str]:
        return [self.kubectl, "--kubeconfig", str(self.kubeconfig)]

    def play(self, tasks: list[dict[str, Any]], extra_vars: dict[str, Any], *options: str) -> Run:
        return run_tasks(self.work, tasks, extra_vars, *options)


@pytest.fixture
def cluster(kubectl: str, tmp_path: Path) -> Iterator[Cluster]:
    api = RecordedKubeAPI()
    api.add(*recorded("namespaces.json"))
    kubeconfig = tmp_path / "kubeconfig"
    with serving(api, kubeconfig):
        yield Cluster(api, kubeconfig, kubectl, tmp_path)


# roles/k3s tasks/node-ready.yml: the wait for Ready (the blocker of issue 9).


def wait_for_ready(cluster: Cluster) -> Run:
    return cluster.play(
        [include_role("k3s", "node-ready")],
        {
            "__k3s_kubectl_argv": cluster.kubectl_argv,
            "k3s_node_role": "server",
            "k3s_server_config": {"node-name": NODE},
            "k3s_node_ready_timeout": 1,
        },
    )


def test_the_ready_wait_reads_a_ready_node(cluster: Cluster) -> None:
    cluster.api.add(recorded("node-ready.json"))
    run = wait_for_ready(cluster)
    assert run.failed == 0, run.stdout
    assert ("GET", f"/api/v1/nodes/{NODE}") in [(m, p) for m, p, _ in cluster.api.requests]


def test_the_ready_wait_names_a_node_that_is_not_ready_and_why(cluster: Cluster) -> None:
    cluster.api.add(recorded("node-not-ready.json"))
    run = wait_for_ready(cluster)
    assert run.failed == 1
    assert f"Node {NODE} (localhost) is not Ready after 1 s: Ready=False (KubeletNotReady:" in (
        run.stdout
    )
    assert "cni plugin not initialized" in run.stdout


def test_the_ready_wait_names_a_node_the_api_does_not_know(cluster: Cluster) -> None:
    run = wait_for_ready(cluster)
    assert run.failed == 1
    assert f'said: Error from server (NotFound): nodes "{NODE}" not found' in run.stdout


# roles/netpol_verify tasks/inputs-kubectl.yml: the cluster snapshot.


def test_the_verify_snapshot_reads_namespaces_pods_and_policies(cluster: Cluster) -> None:
    cluster.api.add(recorded("pod-sample1-nginx.json"))
    show = {
        "name": "Show the pods",
        "ansible.builtin.debug": {"msg": "{{ netpol_verify__pod_ips | to_json }}"},
    }
    run = cluster.play(
        [include_role("netpol_verify", "inputs-kubectl"), show],
        {
            "netpol_verify_kubectl": cluster.kubectl_argv,
            "netpol_verify_node_hosts": {NODE: "localhost"},
            "netpol_verify_namespaces": [],
            "netpol_verify_controller_python": sys.executable,
        },
    )
    assert run.failed == 0, run.stdout + run.stderr
    assert '"sample1/nginx-5869d7778c-x7k2p": "10.42.0.9"' in run.stdout
    paths = {path for method, path, _ in cluster.api.requests if method == "GET"}
    assert {
        "/api/v1/namespaces",
        "/api/v1/pods",
        "/apis/networking.k8s.io/v1/networkpolicies",
    } <= paths


# roles/netpol_bundle: namespaces, diff, apply.


def apply_bundle(cluster: Cluster, *options: str) -> Run:
    return cluster.play(
        [include_role("netpol_bundle")],
        {
            "netpol_bundle_kubectl": [cluster.kubectl],
            "netpol_bundle_kubeconfig": str(cluster.kubeconfig),
            "netpol_bundle_remote_dir": str(cluster.work / "applied"),
            "netpol_bundle_api_timeout": 2,
        },
        *options,
    )


def policy(cluster: Cluster, namespace: str, name: str) -> Any:
    return cluster.api.get("networking.k8s.io/v1", "NetworkPolicy", name, namespace)


def test_the_bundle_is_checked_then_applied_then_left_alone(cluster: Cluster) -> None:
    checked = apply_bundle(cluster, "--check", "--diff")
    assert checked.failed == 0, checked.stdout + checked.stderr
    assert cluster.api.get("v1", "Namespace", "sample1") is None
    assert any(
        method == "POST" and path == "/api/v1/namespaces" and query.get("dryRun") == ["All"]
        for method, path, query in cluster.api.requests
    ), "check mode should ask the API server for a dry run of the namespace"

    applied = apply_bundle(cluster)
    assert applied.failed == 0, applied.stdout + applied.stderr
    assert applied.changed >= 1
    deny = policy(cluster, "sample1", "deny-by-default")
    assert deny is not None
    assert deny["spec"]["podSelector"] == {}
    assert cluster.api.get("apps/v1", "Deployment", "nginx", "sample2") is not None

    before = len(cluster.api.requests)
    again = apply_bundle(cluster, "--diff")
    assert (again.changed, again.failed) == (0, 0), again.stdout
    writes = [
        (method, path)
        for method, path, query in cluster.api.requests[before:]
        if method in {"POST", "PATCH", "PUT", "DELETE"} and query.get("dryRun") != ["All"]
    ]
    assert writes == []


def test_a_changed_policy_is_shown_by_diff_and_applied(cluster: Cluster) -> None:
    applied = apply_bundle(cluster)
    assert applied.failed == 0, applied.stdout + applied.stderr
    policy(cluster, "sample1", "allow-same-namespace")["spec"]["ingress"] = []
    run = apply_bundle(cluster, "--diff")
    assert (run.changed, run.failed) == (1, 0), run.stdout
    assert "networking.k8s.io.v1.NetworkPolicy.sample1.allow-same-namespace" in run.stdout
    assert policy(cluster, "sample1", "allow-same-namespace")["spec"]["ingress"] != []


# roles/k3s_reset tasks/leave-cluster.yml: drain and delete a node the others outlive.


def leave_cluster(cluster: Cluster, *options: str) -> Run:
    return cluster.play(
        [include_role("k3s_reset", "leave-cluster")],
        {
            "k3s_reset_kubectl": cluster.kubectl_argv,
            "k3s_reset_drain_from": "localhost",
            "k3s_reset_node_name": NODE,
            "k3s_reset_drain_timeout": 20,
        },
        *options,
    )


def test_a_reset_node_is_drained_and_deleted_once(cluster: Cluster) -> None:
    cluster.api.add(recorded("node-ready.json"), recorded("pod-sample1-nginx.json"))
    checked = leave_cluster(cluster, "--check")
    assert checked.failed == 0, checked.stdout + checked.stderr
    assert cluster.api.get("v1", "Node", NODE) is not None
    assert cluster.api.get("v1", "Pod", "nginx-5869d7778c-x7k2p", "sample1") is not None

    before = len(cluster.api.requests)
    run = leave_cluster(cluster)
    assert (run.changed, run.failed) == (2, 0), run.stdout + run.stderr
    assert cluster.api.get("v1", "Node", NODE) is None
    assert cluster.api.get("v1", "Pod", "nginx-5869d7778c-x7k2p", "sample1") is None
    evictions = [
        path
        for method, path, _ in cluster.api.requests[before:]
        if method == "POST" and path.endswith("/eviction")
    ]
    assert evictions == ["/api/v1/namespaces/sample1/pods/nginx-5869d7778c-x7k2p/eviction"]

    again = leave_cluster(cluster)
    assert (again.changed, again.failed) == (0, 0), again.stdout
