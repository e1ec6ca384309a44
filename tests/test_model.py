"""NetworkPolicy semantics of k3s_netpol.model, one rule at a time."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from k3s_netpol.model import (
    NAMESPACE_NAME_LABEL,
    Cluster,
    Decision,
    ManifestError,
    NetworkPolicy,
    Pod,
    SideDecision,
    cluster_from_documents,
    decide,
    egress_allowed,
    expect,
    ingress_allowed,
    is_allowed,
    policy_selects,
    ports_match,
    probes_document,
    selector_matches,
)


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(
    key: str,
    ip: str | None,
    labels: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    ns, name = key.split("/")
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "ports": ports or []}]},
    }
    if ip is not None:
        document["status"] = {"podIP": ip}
    return document


def policy(key: str, spec: dict[str, Any], **annotations: str) -> dict[str, Any]:
    ns, name = key.split("/")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": spec,
    }


def build(*documents: dict[str, Any]) -> Cluster:
    return cluster_from_documents(documents, "test.yaml")


def allowed(cluster: Cluster, src: str, dst: str, port: int = 80, protocol: str = "TCP") -> bool:
    verdict = is_allowed(cluster, cluster.pod(src), cluster.pod(dst), port, protocol)
    fast = {(p.source, p.destination): p.allowed for p in expect(cluster, [(port, protocol)])}[
        (src, dst)
    ]
    assert fast == verdict, f"expect() and is_allowed() disagree on {src} -> {dst} {port}"
    return verdict


HTTP = [{"name": "http", "containerPort": 80, "protocol": "TCP"}]


# ---------------------------------------------------------------- selectors


@pytest.mark.parametrize(
    ("expression", "labels", "matches"),
    [
        ({"key": "tier", "operator": "In", "values": ["web", "api"]}, {"tier": "api"}, True),
        ({"key": "tier", "operator": "In", "values": ["web", "api"]}, {"tier": "db"}, False),
        ({"key": "tier", "operator": "In", "values": ["web"]}, {}, False),
        ({"key": "tier", "operator": "NotIn", "values": ["web"]}, {"tier": "db"}, True),
        ({"key": "tier", "operator": "NotIn", "values": ["web"]}, {"tier": "web"}, False),
        ({"key": "tier", "operator": "NotIn", "values": ["web"]}, {}, True),
        ({"key": "tier", "operator": "Exists"}, {"tier": ""}, True),
        ({"key": "tier", "operator": "Exists"}, {"app": "x"}, False),
        ({"key": "tier", "operator": "DoesNotExist"}, {"app": "x"}, True),
        ({"key": "tier", "operator": "DoesNotExist"}, {"tier": "web"}, False),
    ],
)
def test_match_expressions_operators(
    expression: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    assert selector_matches({"matchExpressions": [expression]}, labels) is matches


def test_selector_terms_are_anded_and_empty_selector_matches_all() -> None:
    selector = {
        "matchLabels": {"app": "shop"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}],
    }
    assert selector_matches(selector, {"app": "shop", "tier": "web"})
    assert not selector_matches(selector, {"app": "shop", "tier": "db"})
    assert not selector_matches(selector, {"app": "blog", "tier": "web"})
    assert selector_matches({}, {"anything": "x"})
    assert selector_matches(None, {})


def test_match_expressions_in_a_policy_and_namespace_selector() -> None:
    cluster = build(
        namespace("prod", env="prod"),
        namespace("dev", env="dev"),
        namespace("legacy"),
        pod("prod/db", "10.0.0.1", {"tier": "db"}, HTTP),
        pod("prod/web", "10.0.0.2", {"tier": "web"}, HTTP),
        pod("dev/web", "10.0.0.3", {"tier": "web"}, HTTP),
        pod("legacy/web", "10.0.0.4", {"tier": "web"}, HTTP),
        policy(
            "prod/db-from-not-dev",
            {
                "podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {"key": "env", "operator": "NotIn", "values": ["dev"]}
                                    ]
                                }
                            }
                        ]
                    }
                ],
            },
        ),
    )
    assert allowed(cluster, "prod/web", "prod/db")
    assert allowed(cluster, "legacy/web", "prod/db")  # no env label: NotIn matches
    assert not allowed(cluster, "dev/web", "prod/db")


def test_namespace_and_pod_selector_in_one_peer_are_anded_in_two_peers_ored() -> None:
    documents = [
        namespace("x", team="blue"),
        namespace("y", team="red"),
        pod("x/server", "10.0.0.1", {"role": "server"}, HTTP),
        pod("y/client", "10.0.0.2", {"role": "client"}, HTTP),
        pod("y/other", "10.0.0.3", {"role": "other"}, HTTP),
        pod("x/client", "10.0.0.4", {"role": "client"}, HTTP),
    ]
    and_peer = {"namespaceSelector": {"matchLabels": {"team": "red"}}}
    and_peer["podSelector"] = {"matchLabels": {"role": "client"}}
    anded = build(
        *documents,
        policy(
            "x/p",
            {"podSelector": {"matchLabels": {"role": "server"}}, "ingress": [{"from": [and_peer]}]},
        ),
    )
    assert allowed(anded, "y/client", "x/server")
    assert not allowed(anded, "y/other", "x/server")
    assert not allowed(anded, "x/client", "x/server")
    ored = build(
        *documents,
        policy(
            "x/p",
            {
                "podSelector": {"matchLabels": {"role": "server"}},
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {"matchLabels": {"team": "red"}}},
                            {"podSelector": {"matchLabels": {"role": "client"}}},
                        ]
                    }
                ],
            },
        ),
    )
    assert allowed(ored, "y/other", "x/server")  # any pod of a red namespace
    assert allowed(ored, "x/client", "x/server")  # a client of the policy's own namespace
    assert allowed(ored, "x/client", "y/client")  # not selected by the policy: open


# ---------------------------------------------------------------- rules and policyTypes


def two_pods(*policies: dict[str, Any]) -> Cluster:
    return build(
        pod("ns/a", "10.0.0.1", {"app": "a"}, HTTP),
        pod("ns/b", "10.0.0.2", {"app": "b"}, HTTP),
        *policies,
    )


def test_no_policy_means_everything_allowed() -> None:
    cluster = two_pods()
    assert allowed(cluster, "ns/a", "ns/b")
    assert allowed(cluster, "ns/a", "ns/b", 9999, "UDP")


def test_empty_ingress_list_allows_nothing_and_empty_rule_allows_everything() -> None:
    assert not allowed(
        two_pods(policy("ns/deny", {"podSelector": {}, "ingress": []})), "ns/a", "ns/b"
    )
    assert not allowed(two_pods(policy("ns/deny", {"podSelector": {}})), "ns/a", "ns/b")
    everything = two_pods(
        policy("ns/deny", {"podSelector": {}, "ingress": []}),
        policy("ns/open", {"podSelector": {}, "ingress": [{}]}),
    )
    assert allowed(everything, "ns/a", "ns/b")
    absent_from = two_pods(
        policy("ns/p", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})
    )
    assert allowed(absent_from, "ns/a", "ns/b", 80)
    assert not allowed(absent_from, "ns/a", "ns/b", 81)


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({"podSelector": {}}, ("Ingress",)),
        ({"podSelector": {}, "ingress": []}, ("Ingress",)),
        ({"podSelector": {}, "egress": []}, ("Ingress",)),  # len(egress) == 0: no Egress
        ({"podSelector": {}, "egress": None}, ("Ingress",)),
        ({"podSelector": {}, "egress": [{}]}, ("Ingress", "Egress")),
        (
            {"podSelector": {}, "ingress": [], "egress": [{"ports": [{"port": 53}]}]},
            ("Ingress", "Egress"),
        ),
        ({"podSelector": {}, "policyTypes": [], "egress": [{}]}, ("Ingress", "Egress")),
        ({"podSelector": {}, "policyTypes": ["Egress"]}, ("Egress",)),
        ({"podSelector": {}, "policyTypes": ["Egress"], "egress": []}, ("Egress",)),
        ({"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{}]}, ("Ingress",)),
    ],
)
def test_policy_types_default_as_the_api_server_does(
    spec: dict[str, Any], types: tuple[str, ...]
) -> None:
    """k8s pkg/apis/networking/v1/defaults.go: an empty policyTypes becomes Ingress, plus Egress
    only when len(spec.egress) != 0."""
    assert NetworkPolicy("ns", "p", spec, {}).policy_types == types


def test_empty_egress_list_without_policy_types_leaves_egress_open() -> None:
    cluster = two_pods(policy("ns/p", {"podSelector": {"matchLabels": {"app": "a"}}, "egress": []}))
    a, b = cluster.pod("ns/a"), cluster.pod("ns/b")
    assert egress_allowed(cluster, a, b, 80, "TCP")  # egress: [] alone is not Egress isolation
    assert not ingress_allowed(cluster, b, a, 80, "TCP")  # the defaulted Ingress isolates a
    assert allowed(cluster, "ns/a", "ns/b")
    assert not allowed(cluster, "ns/b", "ns/a")


def test_egress_rules_present_isolate_both_directions() -> None:
    cluster = two_pods(
        policy(
            "ns/p",
            {
                "podSelector": {"matchLabels": {"app": "a"}},
                "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}],
            },
        )
    )
    a, b = cluster.pod("ns/a"), cluster.pod("ns/b")
    assert not egress_allowed(cluster, a, b, 80, "TCP")
    assert egress_allowed(cluster, a, b, 53, "UDP")
    assert not ingress_allowed(cluster, b, a, 80, "TCP")  # defaulted Ingress isolates a too
    assert not allowed(cluster, "ns/a", "ns/b")
    assert not allowed(cluster, "ns/b", "ns/a")


def test_egress_rules_ignored_when_policy_types_say_ingress_only() -> None:
    cluster = two_pods(
        policy(
            "ns/p",
            {
                "podSelector": {"matchLabels": {"app": "b"}},
                "policyTypes": ["Ingress"],
                "ingress": [{}],
                "egress": [],
            },
        )
    )
    assert allowed(cluster, "ns/b", "ns/a")


def test_connection_needs_both_ingress_and_egress() -> None:
    cluster = two_pods(
        policy(
            "ns/a-egress",
            {
                "podSelector": {"matchLabels": {"app": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": 80}]}],
            },
        ),
        policy(
            "ns/b-ingress",
            {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [{"ports": [{"port": 81}]}]},
        ),
    )
    assert not allowed(cluster, "ns/a", "ns/b", 80)  # ingress says no
    assert not allowed(cluster, "ns/a", "ns/b", 81)  # egress says no
    a, b = cluster.pod("ns/a"), cluster.pod("ns/b")
    assert egress_allowed(cluster, a, b, 80, "TCP")
    assert ingress_allowed(cluster, a, b, 81, "TCP")


def test_policies_are_ored_and_only_select_their_own_namespace() -> None:
    cluster = build(
        pod("x/a", "10.0.0.1", {"app": "a"}, HTTP),
        pod("x/b", "10.0.0.2", {"app": "b"}, HTTP),
        pod("y/a", "10.0.0.3", {"app": "a"}, HTTP),
        policy("x/only-81", {"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}),
        policy(
            "x/from-a",
            {
                "podSelector": {},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}],
            },
        ),
    )
    assert allowed(cluster, "x/a", "x/b", 80)
    assert not allowed(cluster, "x/b", "x/a", 80)
    assert allowed(cluster, "x/b", "x/a", 81)
    assert not allowed(cluster, "y/a", "x/b", 80)  # podSelector alone: the policy's namespace
    assert allowed(cluster, "x/b", "y/a", 80)
    assert not policy_selects(cluster.policies[0], cluster.pod("y/a"))


# ---------------------------------------------------------------- ports


def test_end_port_range_is_inclusive_and_protocol_specific() -> None:
    cluster = two_pods(
        policy(
            "ns/range",
            {"podSelector": {}, "ingress": [{"ports": [{"port": 8000, "endPort": 8100}]}]},
        )
    )
    for port, expected in ((7999, False), (8000, True), (8050, True), (8100, True), (8101, False)):
        assert allowed(cluster, "ns/a", "ns/b", port) is expected, port
    assert not allowed(cluster, "ns/a", "ns/b", 8050, "UDP")


def test_protocol_defaults_to_tcp_and_sctp_is_not_tcp() -> None:
    rules = [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 80}, {"port": 90, "protocol": "SCTP"}]}
    ]
    cluster = two_pods(policy("ns/p", {"podSelector": {}, "ingress": rules}))
    assert allowed(cluster, "ns/a", "ns/b", 53, "UDP")
    assert not allowed(cluster, "ns/a", "ns/b", 53, "TCP")
    assert allowed(cluster, "ns/a", "ns/b", 80, "TCP")
    assert not allowed(cluster, "ns/a", "ns/b", 80, "UDP")
    assert allowed(cluster, "ns/a", "ns/b", 90, "SCTP")
    assert not allowed(cluster, "ns/a", "ns/b", 90, "TCP")


def test_protocol_only_port_entry_matches_every_port_of_that_protocol() -> None:
    cluster = two_pods(
        policy("ns/p", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]})
    )
    assert allowed(cluster, "ns/a", "ns/b", 5353, "UDP")
    assert not allowed(cluster, "ns/a", "ns/b", 5353, "TCP")


def test_named_ports_resolve_against_the_destination_on_ingress() -> None:
    cluster = build(
        pod("ns/client", "10.0.0.1", {"app": "client"}, [{"name": "http", "containerPort": 9090}]),
        pod("ns/web", "10.0.0.2", {"app": "web"}, [{"name": "http", "containerPort": 8080}]),
        pod(
            "ns/dns",
            "10.0.0.3",
            {"app": "dns"},
            [{"name": "http", "containerPort": 8080, "protocol": "UDP"}],
        ),
        policy("ns/http", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
    )
    assert allowed(cluster, "ns/client", "ns/web", 8080)
    assert not allowed(cluster, "ns/client", "ns/web", 9090)  # the source's "http" is irrelevant
    assert not allowed(cluster, "ns/client", "ns/dns", 8080, "TCP")  # rule is TCP, port is UDP
    assert not allowed(cluster, "ns/client", "ns/dns", 8080, "UDP")


def test_named_ports_resolve_against_the_destination_on_egress() -> None:
    cluster = build(
        pod(
            "ns/client", "10.0.0.1", {"app": "client"}, [{"name": "metrics", "containerPort": 1111}]
        ),
        pod("ns/api", "10.0.0.2", {"app": "api"}, [{"name": "metrics", "containerPort": 9100}]),
        pod("ns/db", "10.0.0.3", {"app": "db"}, [{"name": "sql", "containerPort": 9100}]),
        policy(
            "ns/client-egress",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": "metrics"}]}],
            },
        ),
    )
    assert allowed(cluster, "ns/client", "ns/api", 9100)
    assert not allowed(cluster, "ns/client", "ns/api", 1111)
    assert not allowed(cluster, "ns/client", "ns/db", 9100)  # db's 9100 is not named metrics
    assert allowed(cluster, "ns/api", "ns/db", 9100)  # api is not egress-isolated


def test_ports_match_helper() -> None:
    target = Pod("ns", "p", {}, "10.0.0.1", (), None)
    assert ports_match(None, target, 1, "UDP")
    assert ports_match([], target, 1, "UDP")
    assert not ports_match([{"port": "http"}], target, 80, "TCP")


# ---------------------------------------------------------------- ipBlock


def test_ipv4_ip_block_with_except_matches_pod_ips_on_ingress_and_egress() -> None:
    block = {"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]}}
    cluster = build(
        pod("ns/in", "10.1.1.5", {"app": "in"}, HTTP),
        pod("ns/excepted", "10.1.2.5", {"app": "excepted"}, HTTP),
        pod("ns/out", "10.2.0.5", {"app": "out"}, HTTP),
        pod("ns/pending", None, {"app": "pending"}, HTTP),
        pod("ns/server", "10.9.0.1", {"app": "server"}, HTTP),
        policy(
            "ns/ingress",
            {"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{"from": [block]}]},
        ),
        policy(
            "ns/egress",
            {
                "podSelector": {"matchLabels": {"app": "pending"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [block]}],
            },
        ),
    )
    assert allowed(cluster, "ns/in", "ns/server")
    assert not allowed(cluster, "ns/excepted", "ns/server")
    assert not allowed(cluster, "ns/out", "ns/server")
    assert not allowed(cluster, "ns/pending", "ns/server")  # no IP: no ipBlock matches it
    assert allowed(cluster, "ns/pending", "ns/in")
    assert not allowed(cluster, "ns/pending", "ns/excepted")


def test_ipv6_ip_block_with_except() -> None:
    cluster = build(
        pod("ns/in", "fd00:10:42::5", {"app": "in"}, HTTP),
        pod("ns/excepted", "fd00:10:42::12", {"app": "excepted"}, HTTP),
        pod("ns/out", "fd00:99::1", {"app": "out"}, HTTP),
        pod("ns/v4", "10.42.0.1", {"app": "v4"}, HTTP),
        pod("ns/server", "fd00:10:42::1", {"app": "server"}, HTTP),
        policy(
            "ns/v6",
            {
                "podSelector": {"matchLabels": {"app": "server"}},
                "ingress": [
                    {
                        "from": [
                            {
                                "ipBlock": {
                                    "cidr": "fd00:10:42::/64",
                                    "except": ["fd00:10:42::12/128"],
                                }
                            }
                        ]
                    },
                    {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 81}]},
                ],
            },
        ),
    )
    assert allowed(cluster, "ns/in", "ns/server")
    assert not allowed(cluster, "ns/excepted", "ns/server")
    assert not allowed(cluster, "ns/out", "ns/server")
    assert not allowed(cluster, "ns/v4", "ns/server", 80)  # the IPv6 block holds no IPv4 pod
    assert allowed(cluster, "ns/v4", "ns/server", 81)
    assert not allowed(cluster, "ns/out", "ns/server", 81)  # 0.0.0.0/0 holds no IPv6 pod


# ---------------------------------------------------------------- the tutorial's bundle

TUTORIAL_POLICIES = """
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata:
  name: deny-by-default
spec:
  podSelector: {}
  ingress: []
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-same-namespace
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-svclbtraefik-ingress
spec:
  podSelector:
    matchLabels:
      svccontroller.k3s.cattle.io/svcname: traefik
  ingress:
  - {}
  policyTypes:
  - Ingress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-traefik-v121-ingress
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/name: traefik
  ingress:
  - {}
  policyTypes:
  - Ingress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-from-cattle-monitoring-system
spec:
  ingress:
    - from:
      - namespaceSelector:
          matchLabels:
            kubernetes.io/metadata.name: cattle-monitoring-system
  podSelector: {}
  policyTypes:
  - Ingress
"""


@pytest.fixture
def tutorial() -> Cluster:
    documents: list[dict[str, Any]] = [
        pod("sample1/nginx", "10.42.0.10", {"app": "nginx"}, HTTP),
        pod("sample1/worker", "10.42.0.11", {"app": "worker"}, HTTP),
        pod(
            "sample1/svclb-traefik",
            "10.42.0.12",
            {"svccontroller.k3s.cattle.io/svcname": "traefik"},
            HTTP,
        ),
        pod("sample2/nginx", "10.42.0.20", {"app": "nginx"}, HTTP),
        pod("sample2/traefik", "10.42.0.21", {"app.kubernetes.io/name": "traefik"}, HTTP),
        pod("cattle-monitoring-system/prometheus", "10.42.0.30", {"app": "prometheus"}, HTTP),
        pod("default/client", "10.42.0.40", {"app": "client"}, HTTP),
    ]
    for target in ("sample1", "sample2"):  # kubectl apply -f networkPolicy.yaml -n <target>
        for document in yaml.safe_load_all(TUTORIAL_POLICIES):
            document["metadata"]["namespace"] = target
            documents.append(document)
    return cluster_from_documents(documents, "networkPolicy.yaml")


def test_tutorial_bundle_blocks_between_sample_namespaces(tutorial: Cluster) -> None:
    assert not allowed(tutorial, "sample1/nginx", "sample2/nginx")
    assert not allowed(tutorial, "sample2/nginx", "sample1/nginx")
    assert not allowed(tutorial, "default/client", "sample1/nginx")


def test_tutorial_bundle_allows_within_a_namespace_and_from_monitoring(tutorial: Cluster) -> None:
    assert allowed(tutorial, "sample1/nginx", "sample1/worker")
    assert allowed(tutorial, "sample1/worker", "sample1/nginx")
    assert allowed(tutorial, "cattle-monitoring-system/prometheus", "sample1/nginx")
    assert allowed(tutorial, "cattle-monitoring-system/prometheus", "sample2/nginx")
    assert allowed(tutorial, "sample1/nginx", "default/client")  # unselected pods stay open


def test_tutorial_bundle_leaves_traefik_pods_open(tutorial: Cluster) -> None:
    assert allowed(tutorial, "sample2/nginx", "sample1/svclb-traefik")
    assert allowed(tutorial, "default/client", "sample1/svclb-traefik")
    assert allowed(tutorial, "sample1/nginx", "sample2/traefik", 443)
    assert not allowed(tutorial, "sample1/nginx", "sample2/nginx", 443)


def test_undeclared_namespaces_get_the_metadata_name_label(tutorial: Cluster) -> None:
    assert tutorial.namespaces["cattle-monitoring-system"].labels == {
        NAMESPACE_NAME_LABEL: "cattle-monitoring-system"
    }
    declared = build(namespace("team", owner="me"), pod("team/a", "10.0.0.1"))
    assert declared.namespaces["team"].labels == {"owner": "me", NAMESPACE_NAME_LABEL: "team"}


# ---------------------------------------------------------------- expect()


def test_expect_defaults_to_each_destination_container_ports_and_skips_self() -> None:
    cluster = build(
        pod(
            "ns/a",
            "10.0.0.1",
            {},
            [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
        ),
        pod("ns/b", "10.0.0.2", {}, [{"containerPort": 8080}]),
        pod("ns/c", "10.0.0.3", {}, []),
    )
    got = [(p.source, p.destination, p.port, p.protocol) for p in expect(cluster)]
    assert got == [
        ("ns/a", "ns/b", 8080, "TCP"),
        ("ns/b", "ns/a", 80, "TCP"),
        ("ns/b", "ns/a", 53, "UDP"),
        ("ns/c", "ns/a", 80, "TCP"),
        ("ns/c", "ns/a", 53, "UDP"),
        ("ns/c", "ns/b", 8080, "TCP"),
    ]
    assert len(expect(cluster, [(80, "TCP"), (81, "UDP")])) == 3 * 2 * 2


def test_expect_rejects_a_bad_probe_port() -> None:
    with pytest.raises(ValueError, match="0/TCP"):
        expect(two_pods(), [(0, "TCP")])
    with pytest.raises(ValueError, match="80/ICMP"):
        expect(two_pods(), [(80, "ICMP")])


def test_probes_document_shape() -> None:
    cluster = two_pods(
        policy("ns/deny", {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": []})
    )
    assert probes_document(expect(cluster)) == {
        "probes": [
            {"from": "ns/a", "to": "ns/b", "port": 80, "protocol": "TCP", "allowed": False},
            {"from": "ns/b", "to": "ns/a", "port": 80, "protocol": "TCP", "allowed": True},
        ]
    }


def _random_cluster(seed: int) -> Cluster:
    rng = random.Random(seed)
    values = ["a", "b", "c"]
    documents: list[dict[str, Any]] = [namespace(f"n{i}", env=rng.choice(values)) for i in range(3)]
    for i in range(12):
        labels = {key: rng.choice(values) for key in ("app", "tier") if rng.random() < 0.8}
        ports = [{"name": "web", "containerPort": rng.choice([80, 81])}]
        document = pod(f"n{i % 3}/p{i}", f"10.0.0.{i + 1}", labels, ports)
        kind = rng.random()
        if kind < 0.08:
            document["spec"]["hostNetwork"] = True
        elif kind < 0.16:
            document["status"]["phase"] = rng.choice(["Succeeded", "Failed"])
        elif kind < 0.22:
            document["status"] = {"phase": "Pending"}
        elif kind < 0.28:
            del document["status"]  # a manifest not run yet: no IP, still in the model
        else:
            document["status"]["phase"] = "Running"
        documents.append(document)

    def selector() -> dict[str, Any]:
        choice = rng.random()
        if choice < 0.3:
            return {}
        if choice < 0.6:
            return {"matchLabels": {"app": rng.choice(values)}}
        operator = rng.choice(["In", "NotIn", "Exists", "DoesNotExist"])
        expression: dict[str, Any] = {"key": "tier", "operator": operator}
        if operator in ("In", "NotIn"):
            expression["values"] = rng.sample(values, 2)
        return {"matchExpressions": [expression]}

    def peer() -> dict[str, Any]:
        choice = rng.random()
        if choice < 0.2:
            return {"ipBlock": {"cidr": "10.0.0.0/29", "except": ["10.0.0.4/30"]}}
        if choice < 0.5:
            return {"podSelector": selector()}
        if choice < 0.7:
            return {"namespaceSelector": {"matchLabels": {"env": rng.choice(values)}}}
        return {"namespaceSelector": selector(), "podSelector": selector()}

    def rules(peers_key: str) -> list[dict[str, Any]]:
        result = []
        for _ in range(rng.randint(0, 2)):
            rule: dict[str, Any] = {}
            if rng.random() < 0.8:
                rule[peers_key] = [peer() for _ in range(rng.randint(1, 2))]
            if rng.random() < 0.5:
                rule["ports"] = [
                    rng.choice([{"port": 80}, {"port": "web"}, {"port": 79, "endPort": 80}])
                ]
            result.append(rule)
        return result

    for j in range(6):
        spec: dict[str, Any] = {"podSelector": selector(), "ingress": rules("from")}
        if rng.random() < 0.5:
            spec["egress"] = rules("to")  # sometimes [], which defaults to Ingress only
        if rng.random() < 0.3:
            spec["policyTypes"] = rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
        documents.append(policy(f"n{j % 3}/q{j}", spec))
    return cluster_from_documents(documents, f"random-{seed}")


@pytest.mark.parametrize("seed", range(25))
def test_expect_agrees_with_the_pairwise_definition(seed: int) -> None:
    cluster = _random_cluster(seed)
    for port in (80, 81):
        probes = expect(cluster, [(port, "TCP")])
        for probe in probes:
            src, dst = cluster.pod(probe.source), cluster.pod(probe.destination)
            assert probe.allowed == is_allowed(cluster, src, dst, port, "TCP"), probe


def test_random_clusters_exercise_both_verdicts() -> None:
    verdicts = {p.allowed for seed in range(25) for p in expect(_random_cluster(seed))}
    assert verdicts == {True, False}


# ---------------------------------------------------------------- decide()


def test_decide_names_the_selecting_policies_and_the_admitting_rules() -> None:
    cluster = build(
        pod("ns/a", "10.0.0.1", {"app": "a"}, HTTP),
        pod("ns/b", "10.0.0.2", {"app": "b"}, HTTP),
        policy("ns/deny-all", {"podSelector": {}, "ingress": []}),
        policy(
            "ns/b-from-a",
            {
                "podSelector": {"matchLabels": {"app": "b"}},
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": "x"}}}]},
                    {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]},
                    {"ports": [{"port": 80}]},
                ],
            },
        ),
        policy(
            "ns/a-egress",
            {
                "podSelector": {"matchLabels": {"app": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}],
            },
        ),
    )
    a, b = cluster.pod("ns/a"), cluster.pod("ns/b")
    decision = decide(cluster, a, b, 80, "TCP")
    assert decision == Decision(
        "ns/a",
        "ns/b",
        80,
        "TCP",
        egress=SideDecision("egress", "ns/a", True, ("ns/a-egress",), (), False),
        ingress=SideDecision(
            "ingress",
            "ns/b",
            True,
            ("ns/deny-all", "ns/b-from-a"),
            (("ns/b-from-a", 1), ("ns/b-from-a", 2)),
            True,
        ),
        allowed=False,
    )
    reverse = decide(cluster, b, a, 80, "TCP")
    assert reverse.egress == SideDecision("egress", "ns/b", False, (), (), True)
    assert reverse.ingress == SideDecision("ingress", "ns/a", True, ("ns/deny-all",), (), False)
    assert not reverse.allowed
    dns = decide(cluster, a, b, 53, "UDP")
    assert dns.egress.allowing == (("ns/a-egress", 0),)
    assert dns.ingress.allowing == (("ns/b-from-a", 1),)
    assert dns.allowed


def test_decide_is_what_is_allowed_and_the_side_checks_say() -> None:
    for seed in range(10):
        cluster = _random_cluster(seed)
        for src in cluster.pods:
            for dst in cluster.pods:
                decision = decide(cluster, src, dst, 80, "TCP")
                assert decision.allowed == is_allowed(cluster, src, dst, 80, "TCP")
                assert decision.egress.allowed == egress_allowed(cluster, src, dst, 80, "TCP")
                assert decision.ingress.allowed == ingress_allowed(cluster, src, dst, 80, "TCP")
                for side in (decision.egress, decision.ingress):
                    assert side.isolated == bool(side.selecting)
                    assert {key for key, _ in side.allowing} <= set(side.selecting)


# ---------------------------------------------------------------- pods kube-router ignores


def test_pods_kube_router_ignores_are_kept_apart_and_match_nothing() -> None:
    host = pod("ns/svclb", "192.168.1.10", {"app": "web"}, HTTP)
    host["spec"]["hostNetwork"] = True
    done = pod("ns/job", "10.0.0.9", {"app": "web"}, HTTP)
    done["status"]["phase"] = "Succeeded"
    failed = pod("ns/crashed", "10.0.0.8", {"app": "web"}, HTTP)
    failed["status"]["phase"] = "Failed"
    pending = pod("ns/pending", None, {"app": "web"}, HTTP)
    pending["status"] = {"phase": "Pending"}
    planned = pod("ns/planned", None, {"app": "web"}, HTTP)  # no status: not run yet
    running = pod("ns/web", "10.0.0.2", {"app": "web"}, HTTP)
    running["status"]["phase"] = "Running"
    cluster = build(
        pod("ns/client", "10.0.0.1", {"app": "client"}, HTTP),
        host,
        done,
        failed,
        pending,
        planned,
        running,
        policy(
            "ns/web-from-web",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]},
                    {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 81}]},
                ],
            },
        ),
    )
    assert [p.key for p in cluster.pods] == ["ns/client", "ns/planned", "ns/web"]
    assert {p.key: p.ignored_reason for p in cluster.ignored} == {
        "ns/svclb": "hostNetwork: NetworkPolicy does not apply to the node's network",
        "ns/job": "phase Succeeded: finished",
        "ns/crashed": "phase Failed: finished",
        "ns/pending": "phase Pending, no podIP yet",
    }
    assert {p.source for p in expect(cluster)} == {"ns/client", "ns/planned", "ns/web"}
    web = cluster.pod("ns/web")
    for key in ("ns/svclb", "ns/job", "ns/crashed", "ns/pending"):
        ignored = cluster.pod(key)
        assert not policy_selects(cluster.policies[0], ignored)
        assert not is_allowed(cluster, ignored, web, 80, "TCP")  # matches no peer
        assert not is_allowed(cluster, ignored, web, 81, "TCP")  # not even 0.0.0.0/0
        assert decide(cluster, web, ignored, 80, "TCP").ingress.selecting == ()
    assert allowed(cluster, "ns/planned", "ns/web")  # its podSelector peer matches it
    assert allowed(cluster, "ns/client", "ns/web", 81)
    assert allowed(cluster, "ns/planned", "ns/web", 81)  # by the podSelector rule, not ipBlock
    assert decide(cluster, cluster.pod("ns/planned"), web, 81, "TCP").ingress.allowing == (
        ("ns/web-from-web", 0),
    )


def test_host_network_and_phase_are_checked() -> None:
    bad = pod("ns/a", "10.0.0.1")
    bad["spec"]["hostNetwork"] = "yes"
    with pytest.raises(ManifestError, match=r"ns/a\): spec.hostNetwork: expected true or false"):
        build(bad)
    bad = pod("ns/a", "10.0.0.1")
    bad["status"]["phase"] = 3
    with pytest.raises(ManifestError, match=r"ns/a\): status.phase: expected a string"):
        build(bad)
