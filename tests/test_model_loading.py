"""Reading manifests into the model: file formats, kinds, and errors that name file and field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from benchmark_modules import bench_expect

from k3s_netpol.model import (
    NAMESPACE_NAME_LABEL,
    Cluster,
    ContainerPort,
    ManifestError,
    _YamlLoader,
    cluster_from_documents,
    expand_documents,
    expect,
    load_manifests,
)

NAMESPACE_X = """\
apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels: {team: blue}
"""
POD_A = """\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec:
  nodeName: node-1
  containers:
  - name: c
    ports:
    - {name: http, containerPort: 80}
    - {containerPort: 53, protocol: UDP}
status: {podIP: 10.42.0.5}
"""
POD_B = """\
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}]}]
status: {podIP: 10.42.0.6}
"""
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx, namespace: x}
spec: {replicas: 1}
"""


def policy_yaml(spec: str, name: str = "foo") -> str:
    head = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata:\n  name: {name}\n  namespace: x\n"
        "  annotations: {kube-router.io/netpol-nflog-limit: 5/second}\nspec:\n"
    )
    return head + "".join(f"  {line}\n" for line in spec.splitlines())


DENY_B = policy_yaml("podSelector: {matchLabels: {app: b}}\ningress: []")


def write(tmp_path: Path, name: str, *documents: str) -> Path:
    path = tmp_path / name
    path.write_text("---\n".join(documents), encoding="utf-8")
    return path


def test_multi_document_files_load_pods_namespaces_and_policies(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", NAMESPACE_X, POD_A, DEPLOYMENT)
    second = write(tmp_path, "b.yaml", POD_B, DENY_B)
    cluster = load_manifests([first, second])
    assert [pod.key for pod in cluster.pods] == ["x/a", "x/b"]
    a = cluster.pod("x/a")
    assert a.labels == {"app": "a"}
    assert a.ip == "10.42.0.5"
    assert a.node == "node-1"
    assert a.ports == (ContainerPort(80, "TCP", "http"), ContainerPort(53, "UDP", None))
    assert cluster.namespaces["x"].labels == {"team": "blue", NAMESPACE_NAME_LABEL: "x"}
    (only_policy,) = cluster.policies
    assert only_policy.key == "x/foo"
    assert only_policy.annotations == {"kube-router.io/netpol-nflog-limit": "5/second"}
    assert only_policy.policy_types == ("Ingress",)
    with pytest.raises(KeyError, match="x/zzz"):
        cluster.pod("x/zzz")


def test_a_kubectl_list_loads_like_separate_documents(tmp_path: Path) -> None:
    items = "".join(
        "- " + document.replace("\n", "\n  ").rstrip() + "\n"
        for document in (NAMESPACE_X, POD_A, POD_B, DEPLOYMENT, DENY_B)
    )
    listed = write(
        tmp_path, "list.yaml", f"apiVersion: v1\nkind: List\nmetadata: {{}}\nitems:\n{items}"
    )
    separate = write(tmp_path, "docs.yaml", NAMESPACE_X, POD_A, POD_B, DEPLOYMENT, DENY_B)
    from_list, from_documents = load_manifests([listed]), load_manifests([separate])
    assert from_list == from_documents
    assert [(p.source, p.destination, p.allowed) for p in expect(from_list, [(80, "TCP")])] == [
        ("x/a", "x/b", False),
        ("x/b", "x/a", True),
    ]


def test_standard_input_is_read_for_dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("---\n".join((POD_A, POD_B))))
    cluster = load_manifests(["-", write(tmp_path, "p.yaml", DENY_B)])
    assert len(cluster.pods) == 2
    assert len(cluster.policies) == 1


def test_namespaces_default_and_referenced_ones_exist() -> None:
    cluster = cluster_from_documents(
        [{"kind": "Pod", "metadata": {"name": "lonely"}}, None],
        "in-memory",  # type: ignore[list-item]
    )
    assert cluster.pods[0].key == "default/lonely"
    assert cluster.pods[0].ip is None
    assert cluster.namespaces["default"].labels == {NAMESPACE_NAME_LABEL: "default"}


def test_ipv6_pod_ip_is_normalised() -> None:
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n"},
        "status": {"podIP": "FD00:0::1"},
    }
    assert cluster_from_documents([pod], "x").pods[0].ip == "fd00::1"


PORT_SPEC = "podSelector: {}\ningress:\n- ports:\n  - port: 80\n  - port: PORT\n"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            PORT_SPEC.replace("PORT", "Http"),
            "spec.ingress[0].ports[1].port: 'Http' is neither a port number",
        ),
        (
            PORT_SPEC.replace("PORT", "web--1"),
            "spec.ingress[0].ports[1].port: 'web--1' is neither a port number",
        ),
        (
            PORT_SPEC.replace("PORT", "a-very-long-port-name"),
            "spec.ingress[0].ports[1].port: 'a-very-long-port-name' is neither",
        ),
        (
            PORT_SPEC.replace("PORT", "70000"),
            "spec.ingress[0].ports[1].port: expected a port number 1-65535",
        ),
        (PORT_SPEC.replace("PORT", '"8080"'), "spec.ingress[0].ports[1].port: '8080' is neither"),
        (
            "podSelector: {}\ningress:\n- ports: [{port: 90, endPort: 80}]",
            "spec.ingress[0].ports[0].endPort: expected an integer from port (90) to 65535, got 80",
        ),
        (
            "podSelector: {}\ningress:\n- ports: [{port: http, endPort: 90}]",
            "spec.ingress[0].ports[0].endPort: cannot be used with a named port",
        ),
        (
            "podSelector: {}\ningress:\n- ports: [{port: 80, protocol: tcp}]",
            "spec.ingress[0].ports[0].protocol: 'tcp' is not one of TCP, UDP, SCTP",
        ),
        (
            "podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}",
            "spec.podSelector.matchExpressions[0].operator: 'Equals' is not one of",
        ),
        (
            "podSelector: {matchExpressions: [{key: a, operator: In}]}",
            "spec.podSelector.matchExpressions[0].values: must be non-empty for In",
        ),
        (
            "podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}",
            "spec.podSelector.matchExpressions[0].values: must be empty for Exists",
        ),
        (
            "podSelector: {matchLabels: {tier: 1}}",
            "spec.podSelector.matchLabels.tier: expected a string value, got 1",
        ),
        ("podselector: {}", "spec.podselector: unknown field"),
        (
            "podSelector: {}\npolicyTypes: [ingress]",
            "spec.policyTypes[0]: 'ingress' is not one of Ingress, Egress",
        ),
        (
            "podSelector: {}\negress:\n- to:\n"
            "  - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}",
            "spec.egress[0].to[0].ipBlock.except[0]: 192.168.0.0/16 is not within cidr 10.0.0.0/8",
        ),
        (
            "podSelector: {}\negress:\n- to:\n  - ipBlock: {cidr: 10.0.0.300/8}",
            "spec.egress[0].to[0].ipBlock.cidr: '10.0.0.300/8' is not a CIDR",
        ),
        (
            "podSelector: {}\ningress:\n- from:\n"
            "  - ipBlock: {cidr: 10.0.0.0/8}\n    podSelector: {}",
            "spec.ingress[0].from[0]: ipBlock cannot be combined",
        ),
        ("podSelector: {}\ningress:\n- from:\n  - {}", "spec.ingress[0].from[0]: must specify"),
        ("podSelector: {}\ningress: {from: []}", "spec.ingress: expected a list, got a mapping"),
    ],
)
def test_bad_policies_name_file_document_object_and_field(
    tmp_path: Path, spec: str, message: str
) -> None:
    path = write(tmp_path, "cases.yaml", NAMESPACE_X, POD_A, policy_yaml(spec))
    with pytest.raises(ManifestError) as caught:
        load_manifests([path])
    expected_prefix = f"{path}: document 3 (NetworkPolicy x/foo): "
    assert str(caught.value).startswith(expected_prefix), str(caught.value)
    assert message in str(caught.value)


def test_the_documented_error_format(tmp_path: Path) -> None:
    path = write(
        tmp_path, "cases.yaml", NAMESPACE_X, POD_A, policy_yaml(PORT_SPEC.replace("PORT", "-1"))
    )
    with pytest.raises(
        ManifestError,
        match=r"^.*cases\.yaml: document 3 \(NetworkPolicy x/foo\): "
        r"spec\.ingress\[0\]\.ports\[1\]\.port: ",
    ):
        load_manifests([path])


def test_errors_inside_a_list_name_the_item(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "list.yaml",
        "kind: List\nitems:\n- kind: Pod\n  metadata: {name: p, namespace: n}\n"
        "- kind: Pod\n  metadata: {name: q, namespace: n}\n  status: {podIP: not-an-ip}\n",
    )
    with pytest.raises(
        ManifestError,
        match=r"list\.yaml: document 1 items\[1\] \(Pod n/q\): "
        r"status\.podIP: 'not-an-ip' is not an IP address",
    ):
        load_manifests([path])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Pod\nmetadata: {name: a\n", r"bad\.yaml: malformed YAML: line \d+, column \d+: "),
        ("- just\n- a list\n", r"bad\.yaml: document 1: expected a mapping, got a list"),
        (
            "kind: Pod\nmetadata:\n  name: a\n  labels: {}\n  name: b\n",
            r"bad\.yaml: malformed YAML: line 5, column 3: duplicate key 'name'",
        ),
        (
            "kind: Pod\nmetadata: {namespace: x}\n",
            r"bad\.yaml: document 1 \(Pod\): metadata\.name: expected a non-empty string",
        ),
        (
            "kind: Pod\nmetadata: {name: a}\n"
            "spec: {containers: [{ports: [{containerPort: http}]}]}\n",
            r"\(Pod default/a\): spec\.containers\[0\]\.ports\[0\]\.containerPort: "
            r"expected an integer 1-65535, got 'http'",
        ),
        (
            "kind: NetworkPolicy\nmetadata: {name: p}\n",
            r"\(NetworkPolicy default/p\): spec: missing",
        ),
        (
            "kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: a}\n",
            r"document 2 \(Pod default/a\): Pod default/a is declared twice",
        ),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError, match=message):
        load_manifests([path])


def test_missing_file_and_no_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nothere\.yaml: no such file"):
        load_manifests([tmp_path / "nothere.yaml"])
    with pytest.raises(ManifestError, match="no manifest file given"):
        load_manifests([])


K3S = Path(__file__).parent / "data" / "k3s-cluster"


def test_a_kubectl_json_list_loads_like_its_yaml(tmp_path: Path) -> None:
    files = ("namespaces.yaml", "pods.yaml", "networkpolicies.yaml")
    as_json = []
    for name in files:
        path = tmp_path / name.replace(".yaml", ".json")
        document = yaml.safe_load((K3S / name).read_text(encoding="utf-8"))
        path.write_text(json.dumps(document, indent=4), encoding="utf-8")
        as_json.append(path)
    from_yaml = load_manifests([K3S / name for name in files])
    from_json = load_manifests(as_json)
    assert from_json == from_yaml
    assert len(from_json.pods) == 11
    assert len(from_json.ignored) == 6


def test_json_with_a_duplicate_key_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pods.json"
    path.write_text('{"kind": "Pod", "kind": "Pod", "metadata": {"name": "a"}}', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"pods.json: malformed JSON: duplicate key 'kind'"):
        load_manifests([path])


def test_a_yaml_flow_mapping_is_still_yaml(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text("{kind: Pod, metadata: {name: a, namespace: x}}\n", encoding="utf-8")
    assert [pod.key for pod in load_manifests([path]).pods] == ["x/a"]


DATA = Path(__file__).parent / "data"
YAML_FILES = sorted(
    [*DATA.glob("netpol-cases/**/*.yaml"), *DATA.glob("k3s-cluster/*.yaml")],
    key=str,
)


def full_load(path: Path) -> Cluster:
    """The cluster through yaml.load_all, constructing every node."""
    text = path.read_text(encoding="utf-8")
    documents = list(yaml.load_all(text, Loader=_YamlLoader))
    items = [
        item
        for number, document in enumerate(documents, start=1)
        if document is not None
        for _, item in expand_documents(document, f"document {number}", str(path))
    ]
    return cluster_from_documents(items, str(path))


@pytest.mark.parametrize("path", YAML_FILES, ids=[path.name for path in YAML_FILES])
def test_the_selective_reader_gives_the_full_loaders_cluster(path: Path) -> None:
    assert load_manifests([path]) == full_load(path)


def test_the_selective_reader_on_a_benchmark_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.yaml"
    path.write_text(yaml.safe_dump(bench_expect().generate(120, 30)), encoding="utf-8")
    cluster = load_manifests([path])
    assert cluster == full_load(path)
    assert len(cluster.pods) > 100
    assert {pod.ignored_reason for pod in cluster.ignored} >= {
        "phase Succeeded: finished",
        "hostNetwork: NetworkPolicy does not apply to the node's network",
    }


FEATURES = {
    "alias": """\
kind: Pod
metadata: {name: p, namespace: ns, annotations: &labels {app: web}, labels: *labels}
status: {podIP: 10.0.0.1}
""",
    "merge key": """\
kind: Pod
metadata:
  name: p
  namespace: ns
  labels:
    <<: {app: web}
    tier: db
status: {podIP: 10.0.0.2, phase: Running}
""",
    "explicit tag": """\
kind: Pod
metadata: {name: p, namespace: ns, labels: {app: !!str web, tier: db}}
status: {podIP: 10.0.0.2, phase: Running}
""",
    "spec before kind": """\
spec:
  hostNetwork: yes
  containers: [{name: c, ports: [{containerPort: 0x50, protocol: UDP}]}]
kind: Pod
metadata: {name: p, namespace: ns, labels: {app: web}}
status: {podIP: 10.0.0.3, phase: Running, conditions: [{type: Ready, status: "True"}]}
""",
}


@pytest.mark.parametrize("feature", FEATURES)
def test_yaml_features_kubectl_never_prints_read_as_the_full_loader_reads_them(
    tmp_path: Path, feature: str
) -> None:
    path = tmp_path / "features.yaml"
    path.write_text(FEATURES[feature], encoding="utf-8")
    cluster = load_manifests([path])
    assert cluster == full_load(path)
    assert cluster.pod("ns/p").labels["app"] == "web"
    if feature == "spec before kind":
        assert cluster.pod("ns/p").ignored_reason is not None  # hostNetwork: yes
        assert cluster.pod("ns/p").ports[0].port == 80


@pytest.mark.parametrize(
    "text",
    [
        "kind: Pod\nmetadata: {name: a, name: b}\n",
        "kind: Pod\nmetadata: {name: a}\nstatus:\n  conditions: []\n  conditions: []\n",
        "kind: Pod\nmetadata: {name: a}\nstatus: {}\nstatus: {}\n",
    ],
)
def test_duplicate_keys_are_refused_where_the_model_reads(tmp_path: Path, text: str) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(
        ManifestError, match=r"dup\.yaml: malformed YAML: line \d+, column \d+: duplicate key"
    ):
        load_manifests([path])
