"""The bundle: rendering from settings, strict settings errors, offline manifest validation."""

import pytest
import yaml

from k3s_netpol.bundle import (
    BundleConfig,
    BundleConfigError,
    config_from_mapping,
    load_config,
    render,
    render_yaml,
    validate_manifests,
)
from k3s_netpol.model import ManifestError, Pod, cluster_from_documents, is_allowed

TUTORIAL_POLICIES = [
    "deny-by-default",
    "allow-same-namespace",
    "allow-all-svclbtraefik-ingress",
    "allow-all-traefik-v121-ingress",
    "allow-from-cattle-monitoring-system",
]


def by_kind(manifests, kind):
    return [m for m in manifests if m["kind"] == kind]


def test_default_bundle_has_the_tutorials_five_policies_per_namespace():
    manifests = render(BundleConfig())
    policies = by_kind(manifests, "NetworkPolicy")
    for namespace in ("sample1", "sample2"):
        names = [p["metadata"]["name"] for p in policies if p["metadata"]["namespace"] == namespace]
        assert names == TUTORIAL_POLICIES
    assert all(p["apiVersion"] == "networking.k8s.io/v1" for p in policies)
    assert [m["metadata"]["name"] for m in by_kind(manifests, "Namespace")] == [
        "sample1",
        "sample2",
    ]


def test_manifests_come_in_apply_order():
    kinds = [m["kind"] for m in render(BundleConfig(namespaces=("a",)))]
    assert kinds == ["Namespace"] + ["NetworkPolicy"] * 5 + ["Deployment", "Service"]


def test_sample_workload_is_spelled_right_and_image_has_no_registry_host():
    manifests = render(BundleConfig(namespaces=("a",)))
    (service,) = by_kind(manifests, "Service")
    (deployment,) = by_kind(manifests, "Deployment")
    assert service["metadata"]["name"] == "nginx-service"
    assert service["spec"]["selector"] == {"app": "nginx"}
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "/" not in image
    custom = render(BundleConfig(namespaces=("a",), sample_image="mirror.example/nginx:1"))
    (deployment,) = by_kind(custom, "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "mirror.example/nginx:1"
    )


def test_monitoring_namespace_is_selected_by_its_metadata_name_label():
    manifests = render(BundleConfig(namespaces=("a",), monitoring_namespace="observability"))
    policy = next(
        p
        for p in by_kind(manifests, "NetworkPolicy")
        if p["metadata"]["name"].startswith("allow-from")
    )
    assert policy["metadata"]["name"] == "allow-from-observability"
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                    }
                }
            ]
        }
    ]


def test_allow_policies_can_be_switched_off_but_deny_by_default_stays():
    config = BundleConfig(
        namespaces=("a",),
        allow_same_namespace=False,
        allow_svclbtraefik_ingress=False,
        allow_traefik_v121_ingress=False,
        allow_from_monitoring=False,
        sample_workload=False,
        namespace_manifests=False,
    )
    assert [m["metadata"]["name"] for m in render(config)] == ["deny-by-default"]


def test_annotations_only_when_set_and_exactly_kube_routers_keys():
    plain = by_kind(render(BundleConfig(namespaces=("a",))), "NetworkPolicy")
    assert all("annotations" not in p["metadata"] for p in plain)
    annotated = by_kind(
        render(BundleConfig(namespaces=("a",), nflog_limit="5/s", nflog_limit_burst=20)),
        "NetworkPolicy",
    )
    for policy in annotated:
        assert policy["metadata"]["annotations"] == {
            "kube-router.io/netpol-nflog-limit": "5/s",
            "kube-router.io/netpol-nflog-limit-burst": "20",
        }


def test_rendered_yaml_round_trips_and_validates(tmp_path):
    config = BundleConfig(nflog_limit="1/second", nflog_limit_burst=5)
    text = render_yaml(render(config))
    assert list(yaml.safe_load_all(text)) == render(config)
    path = tmp_path / "bundle.yaml"
    path.write_text(text)
    assert len(validate_manifests(path)) == 16


def pod(namespace, name, labels=None):
    return Pod(namespace, name, labels or {"app": "nginx"}, "10.0.0.1", (), None)


def test_the_bundle_gives_the_tutorials_reachability():
    cluster = cluster_from_documents(render(BundleConfig()), "bundle")
    s1, s1b, s2 = pod("sample1", "a"), pod("sample1", "b"), pod("sample2", "a")
    monitor = pod("cattle-monitoring-system", "prometheus")
    traefik = pod("sample1", "traefik", {"app.kubernetes.io/name": "traefik"})
    other = pod("kube-system", "x")
    cluster.pods.extend([s1, s1b, s2, monitor, traefik, other])
    assert not is_allowed(cluster, s1, s2, 80, "TCP")
    assert not is_allowed(cluster, s2, s1, 80, "TCP")
    assert is_allowed(cluster, s1b, s1, 80, "TCP")
    assert is_allowed(cluster, monitor, s1, 80, "TCP")
    assert is_allowed(cluster, other, traefik, 80, "TCP")
    assert not is_allowed(cluster, other, s1, 80, "TCP")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"namespaces": []}, "namespaces"),
        ({"namespaces": ["Sample1"]}, "namespaces[0]"),
        ({"namespaces": ["a", "a"]}, "namespaces[1]"),
        ({"namespaces": ["x" * 64]}, "namespaces[0]"),
        ({"namespaces": "sample1"}, "namespaces"),
        ({"monitoring_namespace": "bad_ns"}, "monitoring_namespace"),
        ({"nflog_limit": "10/minutes"}, "nflog_limit"),
        ({"nflog_limit": "0/s"}, "nflog_limit"),
        ({"nflog_limit": 1.5}, "nflog_limit"),
        ({"nflog_limit_burst": 0}, "nflog_limit_burst"),
        ({"nflog_limit_burst": "ten"}, "nflog_limit_burst"),
        ({"nflog_limit_burst": True}, "nflog_limit_burst"),
        ({"allow_same_namespace": "yes"}, "allow_same_namespace"),
        ({"sample_image": "nginx latest"}, "sample_image"),
        ({"sample_replicas": -1}, "sample_replicas"),
        ({"extra_labels": {"team": "a b"}}, "extra_labels.team"),
        ({"nflog_limit_brust": 3}, "nflog_limit_brust"),
    ],
)
def test_bad_settings_fail_naming_the_source_and_field(settings, field):
    with pytest.raises(BundleConfigError) as caught:
        config_from_mapping(settings, "settings.yaml")
    assert str(caught.value).startswith(f"settings.yaml: {field}: ")


def test_settings_with_a_key_prefix_name_the_variable():
    with pytest.raises(BundleConfigError, match=r"^vars: netpol_bundle_nflog_limit: "):
        config_from_mapping({"netpol_bundle_nflog_limit": "fast"}, "vars", "netpol_bundle_")
    with pytest.raises(BundleConfigError, match=r"^vars: nflog_limit: unknown setting"):
        config_from_mapping({"nflog_limit": "5/s"}, "vars", "netpol_bundle_")


def test_settings_accept_what_yaml_and_ansible_hand_over():
    config = config_from_mapping(
        {"namespaces": ["a"], "nflog_limit": 5, "nflog_limit_burst": "7", "extra_labels": None}
    )
    assert (config.nflog_limit, config.nflog_limit_burst, dict(config.extra_labels)) == (
        "5",
        7,
        {},
    )


def test_load_config_refuses_a_repeated_key(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("namespaces: [a]\nnamespaces: [b]\n")
    with pytest.raises(BundleConfigError, match=r"settings\.yaml: malformed YAML: line 2"):
        load_config(path)
    path.write_text("namespaces: [a]\nnflog_limit: 3/h\n")
    assert load_config(path).namespaces == ("a",)


POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: p
  namespace: sample1
{annotations}
spec:
  podSelector: {{}}
  ingress:
  - ports:
    - port: {port}
"""


def write_policy(tmp_path, port="80", annotations=""):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(port=port, annotations=annotations))
    return path


def test_validate_accepts_a_plain_policy(tmp_path):
    assert validate_manifests(write_policy(tmp_path))[0]["metadata"]["name"] == "p"


@pytest.mark.parametrize(
    ("port", "annotations", "expected"),
    [
        ("0", "", r"policy\.yaml: .*spec\.ingress\[0\]\.ports\[0\]\.port: "),
        (
            "80",
            "  annotations:\n    kube-router.io/netpol-nflog-limit: 10/minutes",
            r"policy\.yaml: .*metadata\.annotations\[kube-router\.io/netpol-nflog-limit\]: ",
        ),
        (
            "80",
            "  annotations:\n    kube-router.io/netpol-nflog-limit-burst: 5",
            r"metadata\.annotations\[kube-router\.io/netpol-nflog-limit-burst\]: expected a string",
        ),
        (
            "80",
            "  annotations:\n    kube-router.io.io/netpol-nflog-limit-burst: '5'",
            r"kube-router\.io\.io/netpol-nflog-limit-burst\]: unknown annotation",
        ),
    ],
)
def test_validate_names_file_and_field(tmp_path, port, annotations, expected):
    with pytest.raises(ManifestError, match=expected):
        validate_manifests(write_policy(tmp_path, port, annotations))


def test_validate_catches_the_tutorials_typos(tmp_path):
    path = tmp_path / "networkPolicy.yaml"
    path.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\napiVersion: networking.k8s.io/v1\n"
        "metadata:\n  name: allow-same-namespace\nspec:\n  podSelector: {}\n"
    )
    with pytest.raises(ManifestError, match=r"networkPolicy\.yaml: malformed YAML: line 3.*twice"):
        validate_manifests(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", r"holds no Kubernetes object"),
        ("- a\n", r"document 1: expected a mapping"),
        ("kind: Pod\nmetadata: {name: a}\n", r"document 1: apiVersion: expected"),
        ("apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad}\n", r"metadata\.name: "),
        (
            "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {}\n",
            r"apiVersion: 'extensions/v1beta1' is not",
        ),
        (
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n"
            "  metadata: {name: a_b}\n",
            r"document 1 items\[0\] \(Namespace a_b\): metadata\.name",
        ),
        ("a: [\n", r"malformed YAML: line 2"),
    ],
)
def test_validate_refuses_bad_files(tmp_path, text, expected):
    path = tmp_path / "user.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=r"user\.yaml: .*" + expected):
        validate_manifests(path)


def test_validate_names_a_missing_file(tmp_path):
    with pytest.raises(ManifestError, match=r"nothere\.yaml: no such file"):
        validate_manifests(tmp_path / "nothere.yaml")


def test_bundle_config_is_validated_on_construction():
    with pytest.raises(BundleConfigError, match=r"^nflog_limit_burst: "):
        BundleConfig(nflog_limit_burst=10001)
