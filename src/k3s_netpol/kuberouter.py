"""Names, marks and annotations exactly as kube-router's network policy controller makes them.

Source: the k3s-io fork of kube-router (the module K3s embeds), branch ``k3s-v2.6``,
``pkg/controllers/netpol``:

- ``network_policy_controller.go``: the chain and ipset prefixes, the sync version
  (``strconv.FormatInt(start.UnixNano(), 10)``) that goes into chain-name hashes;
- ``policy.go``: ``networkPolicyChainName``, ``policy{Source,Destination}PodIPSetName``,
  ``policyIndexed*IPSetName`` (the hash inputs reproduced below), the per-policy
  ``DROP by policy <ns>/<name>`` NFLOG rule and the MARK/RETURN pair of ``appendRuleToPolicyChain``;
- ``pod.go``: ``podFirewallChainName`` and the pod chain's unprefixed NFLOG + REJECT rules;
- ``utils.go``: ``safeJoin`` (the 48-character cut), ``getIptablesNFlogLimit`` and
  ``areNFlogParamsCorrect`` (the annotation grammar), ``ipSetName`` (the ``inet6:`` prefix).

Every generated name is a prefix plus the first 16 characters of
``base32.StdEncoding(sha256(concatenation of the parts))``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Final, Literal

NFLOG_GROUP: Final = 100
DEFAULT_NFLOG_LIMIT: Final = "10/minute"
DEFAULT_NFLOG_BURST: Final = 10
MARK_ALLOWED: Final = 0x10000
MARK_PASSED: Final = 0x20000

NFLOG_LIMIT_ANNOTATION: Final = "kube-router.io/netpol-nflog-limit"
NFLOG_BURST_ANNOTATION: Final = "kube-router.io/netpol-nflog-limit-burst"
NFLOG_LIMIT_UNITS: Final = frozenset({"second", "minute", "hour", "day", "s", "m", "h", "d"})

POD_FIREWALL_CHAIN_PREFIX: Final = "KUBE-POD-FW-"
NETWORK_POLICY_CHAIN_PREFIX: Final = "KUBE-NWPLCY-"
SOURCE_SET_PREFIX: Final = "KUBE-SRC-"
DESTINATION_SET_PREFIX: Final = "KUBE-DST-"
INPUT_CHAIN: Final = "KUBE-ROUTER-INPUT"
FORWARD_CHAIN: Final = "KUBE-ROUTER-FORWARD"
OUTPUT_CHAIN: Final = "KUBE-ROUTER-OUTPUT"
DEFAULT_NETPOL_CHAIN: Final = "KUBE-NWPLCY-DEFAULT"
COMMON_NETPOL_CHAIN: Final = "KUBE-NWPLCY-COMMON"
IPV6_SET_PREFIX: Final = "inet6"

DROP_PREFIX_TEXT: Final = "DROP by policy "
# safeJoin in utils.go: the NFLOG prefix is capped at 64 bytes and "DROP by policy " takes 15 of
# them (plus the terminating NUL), so "<ns>/<name>" must fit in 48.
DROP_PREFIX_MAX_JOIN: Final = 48
DROP_PREFIX_MIN_PART: Final = 24

# iptables' limit match: the rate must be positive and at most 10000/second (XT_LIMIT_SCALE),
# the burst between 1 and 10000 (libxt_limit accepts 0, the kernel's checkentry refuses it).
IPTABLES_MAX_RATE_PER_SECOND: Final = 10000
IPTABLES_MAX_BURST: Final = 10000

Family = Literal["IPv4", "IPv6"]
Direction = Literal["ingressrule", "egressrule"]
PeerKind = Literal["pod", "ipblock"]

_GO_INT64_MIN: Final = -(2**63)
_GO_INT64_MAX: Final = 2**63 - 1
_GO_ATOI = re.compile(r"[+-]?[0-9]+")
_UNIT_SECONDS: Final = {
    "second": 1,
    "s": 1,
    "minute": 60,
    "m": 60,
    "hour": 3600,
    "h": 3600,
    "day": 86400,
    "d": 86400,
}
_FAMILIES: Final = ("IPv4", "IPv6")
_DIRECTIONS: Final = ("ingressrule", "egressrule")
_PEER_KINDS: Final = ("pod", "ipblock")


def name_hash(*parts: str) -> str:
    """First 16 characters of base32(sha256(concatenated parts)), as every kube-router name."""
    digest = hashlib.sha256("".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def _check_family(family: str) -> None:
    if family not in _FAMILIES:
        raise ValueError(f"ip family must be one of {', '.join(_FAMILIES)}, not {family!r}")


def _check_direction(direction: str) -> None:
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(_DIRECTIONS)}, not {direction!r}")


def _check_rule_index(rule_index: int) -> None:
    if rule_index < 0:
        raise ValueError(f"rule index must be 0 or more, not {rule_index}")


def ipset_name(set_name: str, family: str) -> str:
    """The name kube-router gives the set in this family: IPv6 sets are ``inet6:<name>``."""
    _check_family(family)
    if family == "IPv6" and not set_name.startswith(IPV6_SET_PREFIX + ":"):
        return f"{IPV6_SET_PREFIX}:{set_name}"
    return set_name


def policy_chain(namespace: str, policy_name: str, version: str, family: Family = "IPv4") -> str:
    """``KUBE-NWPLCY-`` chain of a policy; ``version`` is the sync's UnixNano in base 10."""
    _check_family(family)
    return NETWORK_POLICY_CHAIN_PREFIX + name_hash(namespace, policy_name, version, family)


def pod_firewall_chain(namespace: str, pod_name: str, version: str) -> str:
    """``KUBE-POD-FW-`` chain of a pod (no ip family in its hash)."""
    return POD_FIREWALL_CHAIN_PREFIX + name_hash(namespace, pod_name, version)


def policy_destination_set(namespace: str, policy_name: str, family: Family = "IPv4") -> str:
    """``KUBE-DST-`` set of the pods an ingress policy selects (policyDestinationPodIPSetName)."""
    _check_family(family)
    return ipset_name(DESTINATION_SET_PREFIX + name_hash(namespace, policy_name, family), family)


def policy_source_set(namespace: str, policy_name: str, family: Family = "IPv4") -> str:
    """``KUBE-SRC-`` set of the pods an egress policy selects (policySourcePodIPSetName).

    Same hash as :func:`policy_destination_set`; only the prefix differs.
    """
    _check_family(family)
    return ipset_name(SOURCE_SET_PREFIX + name_hash(namespace, policy_name, family), family)


def rule_peer_set(
    namespace: str,
    policy_name: str,
    direction: Direction,
    rule_index: int,
    family: Family = "IPv4",
    kind: PeerKind = "pod",
) -> str:
    """The set holding one rule's peers, as kube-router names it.

    Ingress rules' peers are sources: ``KUBE-SRC-`` (policyIndexedSource{Pod,IPBlock}IPSetName).
    Egress rules' peers are destinations: ``KUBE-DST-``
    (policyIndexedDestination{Pod,IPBlock}IPSetName). The hash input is
    namespace + policyName + direction + ruleIndex + ipFamily + kind in both cases.
    """
    _check_direction(direction)
    _check_family(family)
    _check_rule_index(rule_index)
    if kind not in _PEER_KINDS:
        raise ValueError(f"peer kind must be one of {', '.join(_PEER_KINDS)}, not {kind!r}")
    prefix = SOURCE_SET_PREFIX if direction == "ingressrule" else DESTINATION_SET_PREFIX
    digest = name_hash(namespace, policy_name, direction, str(rule_index), family, kind)
    return ipset_name(prefix + digest, family)


def rule_source_set(
    namespace: str,
    policy_name: str,
    direction: Direction,
    rule_index: int,
    family: Family = "IPv4",
    kind: PeerKind = "pod",
) -> str:
    """The set of a rule's peers (see :func:`rule_peer_set`).

    For ``ingressrule`` this is the ``KUBE-SRC-`` set. For ``egressrule`` kube-router names the
    peers' set ``KUBE-DST-`` (the peers are destinations), and so does this function.
    """
    return rule_peer_set(namespace, policy_name, direction, rule_index, family, kind)


def rule_destination_set(
    namespace: str,
    policy_name: str,
    rule_index: int,
    family: Family = "IPv4",
    kind: PeerKind = "pod",
) -> str:
    """``KUBE-DST-`` set of an egress rule's destination peers."""
    return rule_peer_set(namespace, policy_name, "egressrule", rule_index, family, kind)


def named_port_set(
    namespace: str,
    policy_name: str,
    direction: Direction,
    rule_index: int,
    named_port_index: int,
    family: Family = "IPv4",
) -> str:
    """``KUBE-DST-`` set of the endpoints of a rule's named port.

    policyIndexed{Ingress,Egress}NamedPortIPSetName: namespace + policyName + direction +
    ruleIndex + namedPortIndex + ipFamily + "namedport"; ``named_port_index`` counts the
    distinct (protocol, port number) endpoints the name resolves to, in kube-router's order.
    """
    _check_direction(direction)
    _check_family(family)
    _check_rule_index(rule_index)
    _check_rule_index(named_port_index)
    digest = name_hash(
        namespace,
        policy_name,
        direction,
        str(rule_index),
        str(named_port_index),
        family,
        "namedport",
    )
    return ipset_name(DESTINATION_SET_PREFIX + digest, family)


def safe_join(namespace: str, name: str) -> str:
    """kube-router's safeJoin: ``namespace/name`` cut to at most 48 characters."""
    if len(namespace) + len(name) < DROP_PREFIX_MAX_JOIN:
        return f"{namespace}/{name}"
    if len(namespace) < DROP_PREFIX_MIN_PART:
        return f"{namespace}/{name[: DROP_PREFIX_MAX_JOIN - len(namespace) - 1]}"
    if len(name) < DROP_PREFIX_MIN_PART:
        return f"{namespace[: DROP_PREFIX_MAX_JOIN - len(name) - 1]}/{name}"
    return f"{namespace[:23]}/{name[:23]}"


def drop_prefix(namespace: str, policy_name: str) -> str:
    """The NFLOG prefix of a policy chain's log rule: ``DROP by policy <ns>/<name>``, cut."""
    return DROP_PREFIX_TEXT + safe_join(namespace, policy_name)


def _is_go_integer(text: str) -> bool:
    """True where Go's strconv.Atoi accepts ``text`` (optional sign, decimal digits, int64)."""
    if not _GO_ATOI.fullmatch(text):
        return False
    return _GO_INT64_MIN <= int(text) <= _GO_INT64_MAX


def nflog_params_correct(limit: str, burst: str) -> bool:
    """kube-router's areNFlogParamsCorrect, verbatim: the grammar it accepts, nothing more."""
    parts = limit.split("/")
    if len(parts) == 1:
        return _is_go_integer(parts[0]) and _is_go_integer(burst)
    if len(parts) == 2 and parts[1] in NFLOG_LIMIT_UNITS:
        return _is_go_integer(parts[0]) and _is_go_integer(burst)
    return False


def parse_nflog_limit(value: str) -> str:
    """Validate a ``kube-router.io/netpol-nflog-limit`` value strictly; return it unchanged.

    Accepted: a positive integer, optionally ``/second|minute|hour|day|s|m|h|d`` (kube-router's
    grammar), and no faster than iptables' limit match allows (10000/second). Anything else
    raises ValueError naming the annotation, where kube-router would silently use the default.
    """
    if not isinstance(value, str):
        raise ValueError(
            f"{NFLOG_LIMIT_ANNOTATION}: must be a string such as {DEFAULT_NFLOG_LIMIT!r}, "
            f"not {type(value).__name__} {value!r}"
        )
    rate_text, _, unit = value.partition("/")
    expected = f"an integer with an optional unit /{'|'.join(sorted(NFLOG_LIMIT_UNITS))}"
    if "/" in value and unit not in NFLOG_LIMIT_UNITS:
        raise ValueError(f"{NFLOG_LIMIT_ANNOTATION}: {value!r} must be {expected}")
    if not rate_text.isascii() or not rate_text.isdigit():
        raise ValueError(f"{NFLOG_LIMIT_ANNOTATION}: {value!r} must be {expected}")
    rate = int(rate_text)
    if rate < 1:
        raise ValueError(f"{NFLOG_LIMIT_ANNOTATION}: {value!r}: the rate must be 1 or more")
    per_second = rate / _UNIT_SECONDS[unit or "second"]
    if per_second > IPTABLES_MAX_RATE_PER_SECOND:
        raise ValueError(
            f"{NFLOG_LIMIT_ANNOTATION}: {value!r} is faster than iptables' limit match allows "
            f"({IPTABLES_MAX_RATE_PER_SECOND}/second)"
        )
    return value


def parse_nflog_burst(value: str) -> int:
    """Validate a ``kube-router.io/netpol-nflog-limit-burst`` value strictly; return the int.

    Accepted: decimal digits only, 1 to 10000 (iptables' limit match). Raises ValueError naming
    the annotation otherwise.
    """
    if not isinstance(value, str):
        raise ValueError(
            f"{NFLOG_BURST_ANNOTATION}: must be a string of digits such as "
            f"'{DEFAULT_NFLOG_BURST}', not {type(value).__name__} {value!r}"
        )
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"{NFLOG_BURST_ANNOTATION}: {value!r} must be an integer")
    burst = int(value)
    if not 1 <= burst <= IPTABLES_MAX_BURST:
        raise ValueError(
            f"{NFLOG_BURST_ANNOTATION}: {value!r} must be between 1 and {IPTABLES_MAX_BURST}"
        )
    return burst


def nflog_settings(annotations: Mapping[str, str]) -> tuple[str, int, list[str]]:
    """The limit and burst kube-router puts on a policy's log rule, with warnings.

    Lenient, like getIptablesNFlogLimit: an absent annotation takes its default; if either value
    fails kube-router's grammar, BOTH fall back to the defaults and a warning says why. Values
    kube-router accepts are returned as it passes them to iptables (the burst as an int).
    """
    limit = annotations.get(NFLOG_LIMIT_ANNOTATION, DEFAULT_NFLOG_LIMIT)
    burst = annotations.get(NFLOG_BURST_ANNOTATION, str(DEFAULT_NFLOG_BURST))
    if not isinstance(limit, str) or not isinstance(burst, str):
        return DEFAULT_NFLOG_LIMIT, DEFAULT_NFLOG_BURST, [_fallback_warning(limit, burst)]
    if not nflog_params_correct(limit, burst):
        return DEFAULT_NFLOG_LIMIT, DEFAULT_NFLOG_BURST, [_fallback_warning(limit, burst)]
    warnings = []
    for annotation_value, strict_parse in ((limit, parse_nflog_limit), (burst, parse_nflog_burst)):
        try:
            strict_parse(annotation_value)
        except ValueError as error:
            warnings.append(f"{error} (kube-router passes it to iptables unchanged)")
    return limit, int(burst), warnings


def _fallback_warning(limit: object, burst: object) -> str:
    return (
        f"{NFLOG_LIMIT_ANNOTATION}={limit!r} / {NFLOG_BURST_ANNOTATION}={burst!r} is not valid: "
        f"kube-router uses the defaults {DEFAULT_NFLOG_LIMIT!r} and {DEFAULT_NFLOG_BURST}"
    )
