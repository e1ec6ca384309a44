"""kube-router's names and annotations, checked against values computed here independently.

Sources (k3s-io/kube-router, branch k3s-v2.6, pkg/controllers/netpol):
- policy.go 918-982: networkPolicyChainName, policy{Source,Destination}PodIPSetName,
  policyIndexed{Source,Destination}{Pod,IPBlock}IPSetName, policyIndexed*NamedPortIPSetName:
  sha256 over the concatenated strings, base32.StdEncoding, first 16 characters, a prefix.
- pod.go 331-335: podFirewallChainName = sha256(namespace + podName + version).
- utils.go 176-182 ipSetName ("inet6:" for IPv6), 184-204 safeJoin, 206-262 the nflog annotations.
- network_policy_controller.go 28-32: the prefixes.
"""

import base64
import hashlib

import pytest

from k3s_netpol import kuberouter as kr


def expected_hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def test_constants_match_kube_router():
    assert kr.NFLOG_GROUP == 100
    assert kr.MARK_ALLOWED == 0x10000
    assert kr.MARK_PASSED == 0x20000
    assert kr.DEFAULT_NFLOG_LIMIT == "10/minute"
    assert kr.DEFAULT_NFLOG_BURST == 10


def test_name_hash_is_base32_of_sha256_cut_to_16():
    assert kr.name_hash("a", "b", "c") == expected_hash("abc")
    assert len(kr.name_hash("x")) == 16


def test_policy_sets_hash_namespace_policy_and_family():
    digest = expected_hash("sample1" + "allow-same-namespace" + "IPv4")
    assert kr.policy_destination_set("sample1", "allow-same-namespace") == "KUBE-DST-" + digest
    assert kr.policy_source_set("sample1", "allow-same-namespace") == "KUBE-SRC-" + digest
    v6 = expected_hash("sample1" + "allow-same-namespace" + "IPv6")
    assert kr.policy_destination_set("sample1", "allow-same-namespace", "IPv6") == (
        "inet6:KUBE-DST-" + v6
    )


def test_sets_have_no_timestamp_so_the_tutorials_iptables_listing_matches():
    # The tutorial's `iptables -L` on node2 shows these set names (chain names there carry the
    # sync timestamp and cannot be reproduced; set names can).
    assert kr.policy_destination_set("sample1", "allow-same-namespace") == (
        "KUBE-DST-5TPLTTXGTPDHQ2AH"
    )
    assert kr.rule_source_set("sample1", "allow-same-namespace", "ingressrule", 0) == (
        "KUBE-SRC-OPGXQ4TCHJJUUOWB"
    )
    assert kr.rule_source_set(
        "sample1", "allow-same-namespace", "ingressrule", 0, "IPv4", "ipblock"
    ) == ("KUBE-SRC-DSEC5V52VOYVVZ4H")
    assert kr.policy_destination_set("sample2", "allow-from-cattle-monitoring-system") == (
        "KUBE-DST-2CMQQKUI4WHO4LO2"
    )


@pytest.mark.parametrize("kind", ["pod", "ipblock"])
def test_ingress_rule_peers_are_source_sets(kind):
    digest = expected_hash("ns" + "pol" + "ingressrule" + "3" + "IPv4" + kind)
    assert kr.rule_source_set("ns", "pol", "ingressrule", 3, "IPv4", kind) == "KUBE-SRC-" + digest


@pytest.mark.parametrize("kind", ["pod", "ipblock"])
def test_egress_rule_peers_are_destination_sets(kind):
    digest = expected_hash("ns" + "pol" + "egressrule" + "12" + "IPv6" + kind)
    name = "inet6:KUBE-DST-" + digest
    assert kr.rule_destination_set("ns", "pol", 12, "IPv6", kind) == name
    assert kr.rule_source_set("ns", "pol", "egressrule", 12, "IPv6", kind) == name
    assert kr.rule_peer_set("ns", "pol", "egressrule", 12, "IPv6", kind) == name


def test_named_port_sets():
    digest = expected_hash("ns" + "pol" + "ingressrule" + "1" + "2" + "IPv4" + "namedport")
    assert kr.named_port_set("ns", "pol", "ingressrule", 1, 2) == "KUBE-DST-" + digest


def test_chain_names_include_the_sync_version():
    version = "1678134000123456789"
    assert kr.policy_chain("ns", "pol", version) == "KUBE-NWPLCY-" + expected_hash(
        "ns" + "pol" + version + "IPv4"
    )
    assert kr.pod_firewall_chain("ns", "nginx-1", version) == "KUBE-POD-FW-" + expected_hash(
        "ns" + "nginx-1" + version
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kr.policy_destination_set("a", "b", "IPv5"), "ip family"),
        (lambda: kr.rule_source_set("a", "b", "sideways", 0), "direction"),
        (lambda: kr.rule_source_set("a", "b", "ingressrule", -1), "rule index"),
        (lambda: kr.rule_source_set("a", "b", "ingressrule", 0, "IPv4", "svc"), "peer kind"),
    ],
)
def test_bad_name_inputs_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("namespace", "name", "joined"),
    [
        ("sample1", "deny-by-default", "sample1/deny-by-default"),
        # 47 characters together: kept whole, "ns/name" is then 48 long.
        ("n" * 20, "p" * 27, "n" * 20 + "/" + "p" * 27),
        # 48 together: the name is cut to 48 - len(ns) - 1.
        ("n" * 20, "p" * 28, "n" * 20 + "/" + "p" * 27),
        ("n" * 30, "p" * 10, "n" * 30 + "/" + "p" * 10),
        ("n" * 40, "p" * 10, "n" * 37 + "/" + "p" * 10),
        ("n" * 30, "p" * 30, "n" * 23 + "/" + "p" * 23),
        ("n" * 24, "p" * 24, "n" * 23 + "/" + "p" * 23),
    ],
)
def test_drop_prefix_is_cut_like_safe_join(namespace, name, joined):
    prefix = kr.drop_prefix(namespace, name)
    assert prefix == "DROP by policy " + joined
    assert len(joined) <= 48


@pytest.mark.parametrize("value", ["10/minute", "5", "1/s", "3/m", "2/hour", "1/h", "7/day", "9/d"])
def test_strict_limit_accepts_kube_router_grammar(value):
    assert kr.parse_nflog_limit(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ten/minute",
        "10/minutes",
        "10/min",
        "10/",
        "/minute",
        "10/minute/2",
        " 10/minute",
        "-5/minute",
        "+5/minute",
        "0/minute",
        "1.5/s",
        "10001/second",
        "٣/s",
    ],
)
def test_strict_limit_refuses_and_names_the_annotation(value):
    with pytest.raises(ValueError, match=r"kube-router\.io/netpol-nflog-limit:"):
        kr.parse_nflog_limit(value)


def test_strict_limit_allows_the_fastest_rate_iptables_takes():
    assert kr.parse_nflog_limit("10000/second") == "10000/second"
    assert kr.parse_nflog_limit("600000/minute") == "600000/minute"
    with pytest.raises(ValueError, match="faster"):
        kr.parse_nflog_limit("600060/minute")


@pytest.mark.parametrize(("value", "burst"), [("1", 1), ("10", 10), ("10000", 10000), ("05", 5)])
def test_strict_burst_accepts(value, burst):
    assert kr.parse_nflog_burst(value) == burst


@pytest.mark.parametrize("value", ["", "0", "-1", "+3", "10001", "five", "1.0", " 5", "5/s"])
def test_strict_burst_refuses_and_names_the_annotation(value):
    with pytest.raises(ValueError, match=r"kube-router\.io/netpol-nflog-limit-burst:"):
        kr.parse_nflog_burst(value)


def test_strict_parsers_refuse_non_strings():
    with pytest.raises(ValueError, match="netpol-nflog-limit:"):
        kr.parse_nflog_limit(10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="netpol-nflog-limit-burst:"):
        kr.parse_nflog_burst(10)  # type: ignore[arg-type]


def test_lenient_defaults_when_absent():
    assert kr.nflog_settings({}) == ("10/minute", 10, [])


def test_lenient_passes_valid_values_through():
    annotations = {
        "kube-router.io/netpol-nflog-limit": "5/s",
        "kube-router.io/netpol-nflog-limit-burst": "20",
    }
    assert kr.nflog_settings(annotations) == ("5/s", 20, [])


@pytest.mark.parametrize(
    "annotations",
    [
        {"kube-router.io/netpol-nflog-limit": "10/minutes"},
        {"kube-router.io/netpol-nflog-limit": "fast"},
        {"kube-router.io/netpol-nflog-limit": ""},
        {"kube-router.io/netpol-nflog-limit-burst": "ten"},
        {"kube-router.io/netpol-nflog-limit-burst": "99999999999999999999"},
    ],
)
def test_lenient_falls_back_to_both_defaults_with_a_warning(annotations):
    # getIptablesNFlogLimit returns defaultLimit, defaultLimitBurst when either is wrong.
    limit, burst, warnings = kr.nflog_settings(
        {"kube-router.io/netpol-nflog-limit": "5/s", "kube-router.io/netpol-nflog-limit-burst": "3"}
        | annotations
    )
    assert (limit, burst) == ("10/minute", 10)
    assert len(warnings) == 1
    assert "defaults" in warnings[0]


def test_lenient_keeps_what_kube_router_accepts_but_iptables_would_not():
    # strconv.Atoi accepts a sign, so kube-router passes "-5/minute" on to iptables.
    limit, burst, warnings = kr.nflog_settings(
        {
            "kube-router.io/netpol-nflog-limit": "-5/minute",
            "kube-router.io/netpol-nflog-limit-burst": "+7",
        }
    )
    assert (limit, burst) == ("-5/minute", 7)
    assert len(warnings) == 2
