"""Who may reach whom: Kubernetes NetworkPolicy v1 semantics over Namespaces, Pods and policies.

`load_manifests` reads ordinary manifests (multi-document YAML, or a `kind: List` such as
`kubectl get ns,pods,networkpolicies -A -o yaml` prints) and validates every NetworkPolicy the
way the API server would, so a bad field fails here with the file and the field path named.
`decide` says, for one connection, which policies select each side and which of their rules
admit it: the destination's ingress AND the source's egress must both allow it. `expect` answers
the same question for every ordered pair of distinct pods and every port, from tables
precomputed over the whole cluster (tests hold it equal to `decide`).

Pods kube-router ignores (`isNetPolActionable`: hostNetwork pods, finished pods, pods a cluster
has given no IP) are kept apart in `Cluster.ignored`: no policy selects them, no peer matches
them, and they are not probe endpoints.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeGuard

import yaml

PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")
# Phases kube-router treats as finished (isFinished; "Completed" is its own constant).
FINISHED_PHASES = ("Succeeded", "Failed", "Completed")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DEFAULT_NAMESPACE = "default"

_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_BASE_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _YamlLoader(_BASE_YAML_LOADER):  # type: ignore[misc]
    """Safe loading (libyaml's parser when present) that refuses duplicate mapping keys,
    which plain YAML loading would resolve silently by keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                )
            seen.add(key_node.value)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


class ManifestError(ValueError):
    """Bad input: the message names the file and the field."""


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str
    name: str | None


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str | None
    ports: tuple[ContainerPort, ...]
    node: str | None
    host_network: bool = False
    phase: str | None = None  # status.phase; None for a manifest no cluster has run yet

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @cached_property
    def ignored_reason(self) -> str | None:
        """Why kube-router leaves this pod out of every policy (isNetPolActionable), or None.

        A pod without status.phase is a manifest no cluster has run yet: it has no IP because
        none was given, and it stays in the model (only an ipBlock cannot match it).
        """
        if self.host_network:
            return "hostNetwork: NetworkPolicy does not apply to the node's network"
        if self.phase in FINISHED_PHASES:
            return f"phase {self.phase}: finished"
        if self.phase is not None and self.ip is None:
            return f"phase {self.phase}, no podIP yet"
        return None


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    spec: Mapping[str, Any]
    annotations: Mapping[str, str]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @cached_property
    def policy_types(self) -> tuple[str, ...]:
        """spec.policyTypes, or what the API server defaults an empty one to
        (k8s pkg/apis/networking/v1/defaults.go): Ingress, plus Egress only when spec.egress
        holds at least one rule, so `egress: []` alone leaves egress open."""
        declared = self.spec.get("policyTypes")
        if declared:
            return tuple(declared)
        if self.spec.get("egress"):
            return ("Ingress", "Egress")
        return ("Ingress",)


@dataclass
class Cluster:
    """`pods` are the probe endpoints; `ignored` the pods kube-router ignores (see
    Pod.ignored_reason), in manifest order."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: list[Pod] = field(default_factory=list)
    policies: list[NetworkPolicy] = field(default_factory=list)
    ignored: list[Pod] = field(default_factory=list)

    def pod(self, key: str) -> Pod:
        """The pod named `ns/name`, an ignored one included."""
        for pod in (*self.pods, *self.ignored):
            if pod.key == key:
                return pod
        raise KeyError(f"no pod {key!r} in the cluster")

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        namespace = self.namespaces.get(name)
        if namespace is None:
            return {NAMESPACE_NAME_LABEL: name}
        return namespace.labels


@dataclass(frozen=True, slots=True)
class Probe:
    source: str
    destination: str
    port: int
    protocol: str
    allowed: bool


# --------------------------------------------------------------------------- loading


def load_manifests(paths: Sequence[str | Path]) -> Cluster:
    """Read every file (multi-document YAML, `kind: List` allowed) into one Cluster.

    The path `-` reads standard input, as `kubectl apply -f -` does.
    """
    if not paths:
        raise ManifestError("no manifest file given")
    documents: list[tuple[str, Mapping[str, Any], str]] = []
    for path in paths:
        label = "<stdin>" if str(path) == "-" else str(path)
        try:
            text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{label}: no such file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ManifestError(f"{label}: cannot read: {error}") from None
        documents.extend(_parse_json(text, label) or _parse_yaml(text, label))
    builder = _ClusterBuilder()
    for where, document, source in documents:
        builder.add(document, f"{source}: {where}")
    return builder.build()


def cluster_from_documents(documents: Iterable[Mapping[str, Any]], source: str) -> Cluster:
    """Build a Cluster from already-parsed manifests; `source` names them in error messages."""
    builder = _ClusterBuilder()
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue
        for where, item in expand_documents(document, f"document {number}", source):
            builder.add(item, f"{source}: {where}")
    return builder.build()


class _DuplicateJsonKey(ValueError):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise _DuplicateJsonKey(f"duplicate key {key!r}")
        mapping[key] = value
    return mapping


def _parse_json(text: str, source: str) -> list[tuple[str, Mapping[str, Any], str]]:
    """A JSON document (`kubectl get -o json`), parsed far faster than YAML; [] for any other
    text, which the YAML parser then reads (a YAML flow mapping starts with "{" too)."""
    if not text.lstrip().startswith("{"):
        return []
    try:
        document = json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError:
        return []
    except _DuplicateJsonKey as error:
        raise ManifestError(f"{source}: malformed JSON: {error}") from None
    return [
        (where, item, source) for where, item in expand_documents(document, "document 1", source)
    ]


def _parse_yaml(text: str, source: str) -> list[tuple[str, Mapping[str, Any], str]]:
    try:
        try:
            raw_documents = _SelectiveYamlReader(text).documents()
        except _NotPlainYaml:
            raw_documents = list(yaml.load_all(text, Loader=_YamlLoader))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        position = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ManifestError(f"{source}: malformed YAML: {position}{problem}") from None
    result: list[tuple[str, Mapping[str, Any], str]] = []
    for number, document in enumerate(raw_documents, start=1):
        if document is None:
            continue
        for where, item in expand_documents(document, f"document {number}", source):
            result.append((where, item, source))
    return result


class _NotPlainYaml(Exception):
    """The text uses a YAML feature the selective reader leaves to the full loader."""


# What _SelectiveYamlReader builds of an object: a mapping of key -> what to build of its value
# ("*" for other keys), ("each", what) for each item of a list, None for all of it, _SKIP for none.
_SKIP = "skip"
_Wanted = Any
_CONTAINER: dict[str, _Wanted] = {"name": None, "ports": None, "*": _SKIP}
_POD_SPEC: dict[str, _Wanted] = {
    "containers": ("each", _CONTAINER),
    "hostNetwork": None,
    "nodeName": None,
    "*": _SKIP,
}
_OBJECT: dict[str, _Wanted] = {
    "metadata": {"name": None, "namespace": None, "labels": None, "annotations": None, "*": _SKIP},
    "status": {"podIP": None, "phase": None, "*": _SKIP},
    "*": None,
}
_OBJECT["items"] = ("each", _OBJECT)


class _SelectiveYamlReader:
    """Plain YAML (what kubectl prints) read event by event, building only what the model
    reads of each object (_OBJECT; a Pod's spec only when `kind: Pod` comes first, as kubectl
    writes it): a big snapshot's conditions, container statuses, volumes and env are parsed
    but never constructed, which makes it several times faster than yaml.load_all.
    Scalars are resolved and constructed as the safe loader does; duplicate keys are refused
    as _YamlLoader refuses them. Anchors, aliases, explicit tags, merge keys and complex keys
    raise _NotPlainYaml: the full loader reads those."""

    def __init__(self, text: str) -> None:
        self.loader = _YamlLoader(text)

    def documents(self) -> list[Any]:
        loader = self.loader
        documents = []
        try:
            loader.get_event()  # StreamStartEvent
            while not loader.check_event(yaml.StreamEndEvent):
                loader.get_event()  # DocumentStartEvent
                documents.append(self._value(_OBJECT))
                loader.get_event()  # DocumentEndEvent
        finally:
            loader.dispose()
        return documents

    def _value(self, wanted: _Wanted) -> Any:
        event = self.loader.get_event()
        if isinstance(event, yaml.ScalarEvent):
            return self._scalar(event)
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None or not event.implicit:
            raise _NotPlainYaml
        if isinstance(event, yaml.SequenceStartEvent):
            each = wanted[1] if isinstance(wanted, tuple) else None
            items = []
            while not self.loader.check_event(yaml.SequenceEndEvent):
                items.append(self._value(each))
            self.loader.get_event()
            return items
        mapping: dict[Any, Any] = {}
        seen: set[Any] = set()
        while not self.loader.check_event(yaml.MappingEndEvent):
            key_event = self.loader.get_event()
            if not isinstance(key_event, yaml.ScalarEvent):
                raise _NotPlainYaml
            key = self._scalar(key_event)
            if key in seen:
                mark: Any = key_event.start_mark  # the C parser's Mark, not yaml.error.Mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_event.value!r}", mark
                )
            seen.add(key)
            below: _Wanted
            if not isinstance(wanted, dict):
                below = None
            elif key == "spec" and wanted is _OBJECT:
                below = _POD_SPEC if mapping.get("kind") == "Pod" else None
            else:
                below = wanted.get(key, wanted.get("*"))
            if below == _SKIP:
                self._skip()
            else:
                mapping[key] = self._value(below)
        self.loader.get_event()
        return mapping

    def _scalar(self, event: Any) -> Any:
        if event.anchor is not None or event.tag not in (None, "!"):
            raise _NotPlainYaml
        tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        construct = self.loader.yaml_constructors.get(tag)
        if construct is None:  # a merge key `<<`
            raise _NotPlainYaml
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        return construct(self.loader, node)

    def _skip(self) -> None:
        depth = 0
        while True:
            event = self.loader.get_event()
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            if depth == 0:
                return


def expand_documents(document: Any, where: str, source: str) -> list[tuple[str, Mapping[str, Any]]]:
    """One parsed YAML document as the objects it holds, each with where it stands
    (``document 2 items[0]``): a ``kind: ...List`` with ``items`` is expanded, recursively.

    Raises ManifestError (``source: where: ...``) for a document or item that is not a mapping,
    or ``items`` that is not a list.
    """
    if not isinstance(document, Mapping):
        raise ManifestError(f"{source}: {where}: expected a mapping, got {_kind_of(document)}")
    kind = document.get("kind")
    if not (isinstance(kind, str) and kind.endswith("List") and "items" in document):
        return [(where, document)]
    items = document["items"]
    if items is None:
        return []
    if not isinstance(items, list):
        raise ManifestError(f"{source}: {where} ({kind}): items: expected a list")
    expanded: list[tuple[str, Mapping[str, Any]]] = []
    for index, item in enumerate(items):
        expanded.extend(expand_documents(item, f"{where} items[{index}]", source))
    return expanded


def object_metadata(
    document: Mapping[str, Any], kind: str, where: str
) -> tuple[Mapping[str, Any], str]:
    """An object's metadata and its name, which must be there."""
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ManifestError(f"{where} ({kind}): metadata: expected a mapping")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where} ({kind}): metadata.name: expected a non-empty string")
    return metadata, name


class _ClusterBuilder:
    def __init__(self) -> None:
        self.namespaces: dict[str, Namespace] = {}
        self.pods: dict[str, Pod] = {}
        self.policies: dict[str, NetworkPolicy] = {}
        self.referenced_namespaces: list[str] = []

    def add(self, document: Mapping[str, Any], where: str) -> None:
        kind = document.get("kind")
        if kind not in ("Namespace", "Pod", "NetworkPolicy"):
            return
        metadata, name = object_metadata(document, kind, where)
        if kind == "Namespace":
            context = f"{where} (Namespace {name})"
            if name in self.namespaces:
                raise ManifestError(f"{context}: Namespace {name} is declared twice")
            labels = dict(_string_map(metadata.get("labels"), "metadata.labels", context))
            labels[NAMESPACE_NAME_LABEL] = name
            self.namespaces[name] = Namespace(name, labels)
            return
        namespace = metadata.get("namespace", DEFAULT_NAMESPACE)
        if not isinstance(namespace, str) or not namespace:
            raise ManifestError(
                f"{where} ({kind} {name}): metadata.namespace: expected a non-empty string"
            )
        context = f"{where} ({kind} {namespace}/{name})"
        self.referenced_namespaces.append(namespace)
        if kind == "Pod":
            pod = _pod(document, metadata, namespace, name, context)
            if pod.key in self.pods:
                raise ManifestError(f"{context}: Pod {pod.key} is declared twice")
            self.pods[pod.key] = pod
        else:
            policy = _policy(document, metadata, namespace, name, context)
            if policy.key in self.policies:
                raise ManifestError(f"{context}: NetworkPolicy {policy.key} is declared twice")
            self.policies[policy.key] = policy

    def build(self) -> Cluster:
        namespaces = dict(self.namespaces)
        for name in self.referenced_namespaces:
            if name not in namespaces:
                namespaces[name] = Namespace(name, {NAMESPACE_NAME_LABEL: name})
        pods = [pod for pod in self.pods.values() if pod.ignored_reason is None]
        ignored = [pod for pod in self.pods.values() if pod.ignored_reason is not None]
        return Cluster(namespaces, pods, list(self.policies.values()), ignored)


def _pod(
    document: Mapping[str, Any],
    metadata: Mapping[str, Any],
    namespace: str,
    name: str,
    context: str,
) -> Pod:
    labels = _string_map(metadata.get("labels"), "metadata.labels", context)
    spec = _mapping(document.get("spec"), "spec", context)
    status = _mapping(document.get("status"), "status", context)
    node = spec.get("nodeName")
    if node is not None and not isinstance(node, str):
        raise ManifestError(f"{context}: spec.nodeName: expected a string")
    host_network = spec.get("hostNetwork")
    if host_network is None:
        host_network = False
    if not isinstance(host_network, bool):
        raise ManifestError(f"{context}: spec.hostNetwork: expected true or false")
    phase = status.get("phase")
    if phase is not None and not isinstance(phase, str):
        raise ManifestError(f"{context}: status.phase: expected a string")
    ip = status.get("podIP") or None
    if ip is not None:
        if not isinstance(ip, str):
            raise ManifestError(f"{context}: status.podIP: expected an IP address string")
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise ManifestError(f"{context}: status.podIP: {ip!r} is not an IP address") from None
    ports: list[ContainerPort] = []
    containers = _list(spec.get("containers"), "spec.containers", context)
    for c_index, container in enumerate(containers):
        c_path = f"spec.containers[{c_index}]"
        container = _mapping(container, c_path, context)
        for p_index, entry in enumerate(_list(container.get("ports"), f"{c_path}.ports", context)):
            p_path = f"{c_path}.ports[{p_index}]"
            entry = _mapping(entry, p_path, context)
            number = entry.get("containerPort")
            if not _is_port_number(number):
                raise ManifestError(
                    f"{context}: {p_path}.containerPort: expected an integer 1-65535, "
                    f"got {number!r}"
                )
            protocol = _protocol(entry.get("protocol"), f"{p_path}.protocol", context)
            port_name = entry.get("name")
            if port_name is not None and not isinstance(port_name, str):
                raise ManifestError(f"{context}: {p_path}.name: expected a string")
            ports.append(ContainerPort(number, protocol, port_name))
    return Pod(namespace, name, labels, ip, tuple(ports), node, host_network, phase or None)


def _policy(
    document: Mapping[str, Any],
    metadata: Mapping[str, Any],
    namespace: str,
    name: str,
    context: str,
) -> NetworkPolicy:
    annotations = _string_map(metadata.get("annotations"), "metadata.annotations", context)
    spec = document.get("spec")
    if spec is None:
        raise ManifestError(f"{context}: spec: missing")
    spec = _mapping(spec, "spec", context)
    _check_keys(spec, ("podSelector", "policyTypes", "ingress", "egress"), "spec", context)
    _check_selector(spec.get("podSelector"), "spec.podSelector", context)
    policy_types = _list(spec.get("policyTypes"), "spec.policyTypes", context)
    for index, policy_type in enumerate(policy_types):
        if policy_type not in POLICY_TYPES:
            raise ManifestError(
                f"{context}: spec.policyTypes[{index}]: {policy_type!r} is not one of "
                f"{', '.join(POLICY_TYPES)}"
            )
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        rules = _list(spec.get(direction), f"spec.{direction}", context)
        for r_index, rule in enumerate(rules):
            r_path = f"spec.{direction}[{r_index}]"
            rule = _mapping(rule, r_path, context)
            _check_keys(rule, (peers_key, "ports"), r_path, context)
            peers = _list(rule.get(peers_key), f"{r_path}.{peers_key}", context)
            for p_index, peer in enumerate(peers):
                _check_peer(peer, f"{r_path}.{peers_key}[{p_index}]", context)
            ports = _list(rule.get("ports"), f"{r_path}.ports", context)
            for p_index, port in enumerate(ports):
                _check_policy_port(port, f"{r_path}.ports[{p_index}]", context)
    return NetworkPolicy(namespace, name, spec, annotations)


def _check_selector(selector: Any, path: str, context: str) -> None:
    if selector is None:
        return
    selector = _mapping(selector, path, context)
    _check_keys(selector, ("matchLabels", "matchExpressions"), path, context)
    _string_map(selector.get("matchLabels"), f"{path}.matchLabels", context)
    expressions = _list(selector.get("matchExpressions"), f"{path}.matchExpressions", context)
    for index, expression in enumerate(expressions):
        e_path = f"{path}.matchExpressions[{index}]"
        expression = _mapping(expression, e_path, context)
        _check_keys(expression, ("key", "operator", "values"), e_path, context)
        key = expression.get("key")
        if not isinstance(key, str) or not key:
            raise ManifestError(f"{context}: {e_path}.key: expected a non-empty string")
        operator = expression.get("operator")
        if operator not in _SELECTOR_OPERATORS:
            raise ManifestError(
                f"{context}: {e_path}.operator: {operator!r} is not one of "
                f"{', '.join(_SELECTOR_OPERATORS)}"
            )
        values = _list(expression.get("values"), f"{e_path}.values", context)
        for v_index, value in enumerate(values):
            if not isinstance(value, str):
                raise ManifestError(
                    f"{context}: {e_path}.values[{v_index}]: expected a string, got {value!r}"
                )
        if operator in ("In", "NotIn") and not values:
            raise ManifestError(f"{context}: {e_path}.values: must be non-empty for {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            raise ManifestError(f"{context}: {e_path}.values: must be empty for {operator}")


def _check_peer(peer: Any, path: str, context: str) -> None:
    peer = _mapping(peer, path, context)
    _check_keys(peer, ("podSelector", "namespaceSelector", "ipBlock"), path, context)
    if not peer:
        raise ManifestError(
            f"{context}: {path}: must specify podSelector, namespaceSelector or ipBlock"
        )
    if "ipBlock" in peer:
        if "podSelector" in peer or "namespaceSelector" in peer:
            raise ManifestError(
                f"{context}: {path}: ipBlock cannot be combined with podSelector or "
                "namespaceSelector"
            )
        _check_ip_block(peer["ipBlock"], f"{path}.ipBlock", context)
        return
    _check_selector(peer.get("podSelector"), f"{path}.podSelector", context)
    _check_selector(peer.get("namespaceSelector"), f"{path}.namespaceSelector", context)


def _check_ip_block(block: Any, path: str, context: str) -> None:
    block = _mapping(block, path, context)
    _check_keys(block, ("cidr", "except"), path, context)
    cidr = _network(block.get("cidr"), f"{path}.cidr", context)
    for index, value in enumerate(_list(block.get("except"), f"{path}.except", context)):
        excepted = _network(value, f"{path}.except[{index}]", context)
        if excepted.version != cidr.version or not excepted.subnet_of(cidr):  # type: ignore[arg-type]
            raise ManifestError(
                f"{context}: {path}.except[{index}]: {value} is not within cidr {cidr}"
            )


def _check_policy_port(entry: Any, path: str, context: str) -> None:
    entry = _mapping(entry, path, context)
    _check_keys(entry, ("port", "endPort", "protocol"), path, context)
    _protocol(entry.get("protocol"), f"{path}.protocol", context)
    port = entry.get("port")
    end_port = entry.get("endPort")
    if port is None:
        if end_port is not None:
            raise ManifestError(f"{context}: {path}.endPort: needs a numeric port")
        return
    if isinstance(port, str):
        if (
            not _PORT_NAME.match(port)
            or len(port) > 15
            or "--" in port
            or not re.search("[a-z]", port)
        ):
            raise ManifestError(
                f"{context}: {path}.port: {port!r} is neither a port number nor a valid port "
                "name (at most 15 lowercase letters, digits and single '-', with a letter)"
            )
        if end_port is not None:
            raise ManifestError(f"{context}: {path}.endPort: cannot be used with a named port")
        return
    if not _is_port_number(port):
        raise ManifestError(
            f"{context}: {path}.port: expected a port number 1-65535 or a port name, got {port!r}"
        )
    if end_port is not None and (not _is_port_number(end_port) or end_port < port):
        raise ManifestError(
            f"{context}: {path}.endPort: expected an integer from port ({port}) to 65535, "
            f"got {end_port!r}"
        )


def _network(value: Any, path: str, context: str) -> IPNetwork:
    if not isinstance(value, str):
        raise ManifestError(f"{context}: {path}: expected a CIDR string, got {value!r}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ManifestError(f"{context}: {path}: {value!r} is not a CIDR") from None


def _protocol(value: Any, path: str, context: str) -> str:
    if value is None:
        return "TCP"
    if value not in PROTOCOLS:
        raise ManifestError(f"{context}: {path}: {value!r} is not one of {', '.join(PROTOCOLS)}")
    return str(value)


def _is_port_number(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _mapping(value: Any, path: str, context: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ManifestError(f"{context}: {path}: expected a mapping, got {_kind_of(value)}")
    return value


def _list(value: Any, path: str, context: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"{context}: {path}: expected a list, got {_kind_of(value)}")
    return value


def _string_map(value: Any, path: str, context: str) -> dict[str, str]:
    mapping = _mapping(value, path, context)
    for key, item in mapping.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ManifestError(
                f"{context}: {path}.{key}: expected a string value, got {item!r} "
                "(quote numbers and booleans)"
            )
    return dict(mapping)


def _check_keys(value: Mapping[str, Any], allowed: Sequence[str], path: str, context: str) -> None:
    for key in value:
        if key not in allowed:
            raise ManifestError(
                f"{context}: {path}.{key}: unknown field (expected one of {', '.join(allowed)})"
            )


def _kind_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


# --------------------------------------------------------------------------- semantics


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector against labels; an absent or empty selector matches everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or ():
        key = expression["key"]
        operator = expression["operator"]
        values = expression.get("values") or ()
        if operator == "In":
            if key not in labels or labels[key] not in values:
                return False
        elif operator == "NotIn":
            if key in labels and labels[key] in values:
                return False
        elif operator == "Exists":
            if key not in labels:
                return False
        elif operator == "DoesNotExist":
            if key in labels:
                return False
        else:
            raise ValueError(f"unknown label selector operator {operator!r}")
    return True


def policy_selects(policy: NetworkPolicy, pod: Pod) -> bool:
    """Whether the policy applies to the pod: same namespace and spec.podSelector matches.

    A pod kube-router ignores (Pod.ignored_reason) is selected by no policy.
    """
    return (
        pod.namespace == policy.namespace
        and pod.ignored_reason is None
        and selector_matches(policy.spec.get("podSelector"), pod.labels)
    )


def peer_matches(
    cluster: Cluster, policy: NetworkPolicy, peer: Mapping[str, Any], pod: Pod
) -> bool:
    """Whether one from/to peer (podSelector, namespaceSelector, both, or ipBlock) covers pod.

    A pod kube-router ignores matches no peer; a pod without an IP matches no ipBlock.
    """
    if pod.ignored_reason is not None:
        return False
    block = peer.get("ipBlock")
    if block is not None:
        return pod.ip is not None and _ip_in_block(ipaddress.ip_address(pod.ip), block)
    namespace_selector = peer.get("namespaceSelector")
    if namespace_selector is None:
        if pod.namespace != policy.namespace:
            return False
    elif not selector_matches(namespace_selector, cluster.namespace_labels(pod.namespace)):
        return False
    return selector_matches(peer.get("podSelector"), pod.labels)


def _ip_in_block(address: IPAddress, block: Mapping[str, Any]) -> bool:
    return _address_in_networks(address, *_block_networks(block))


def _block_networks(block: Mapping[str, Any]) -> tuple[IPNetwork, list[IPNetwork]]:
    """An ipBlock's cidr and except networks."""
    cidr = ipaddress.ip_network(block["cidr"], strict=False)
    return cidr, [ipaddress.ip_network(value, strict=False) for value in block.get("except") or ()]


def _address_in_networks(address: IPAddress, cidr: IPNetwork, excepted: list[IPNetwork]) -> bool:
    if address.version != cidr.version or address not in cidr:
        return False
    return not any(address in network for network in excepted)


def ports_match(
    rule_ports: Sequence[Mapping[str, Any]] | None, pod: Pod, port: int, protocol: str
) -> bool:
    """Whether a rule's ports admit port/protocol on the destination pod.

    Named ports resolve against the destination pod's containerPorts (name and protocol).
    """
    if not rule_ports:
        return True
    return any(_port_entry_matches(entry, pod.ports, port, protocol) for entry in rule_ports)


def _port_entry_matches(
    entry: Mapping[str, Any], pod_ports: Sequence[ContainerPort], port: int, protocol: str
) -> bool:
    if (entry.get("protocol") or "TCP") != protocol:
        return False
    wanted = entry.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return any(
            declared.name == wanted and declared.port == port and declared.protocol == protocol
            for declared in pod_ports
        )
    end_port = entry.get("endPort")
    return bool(wanted <= port <= (end_port if end_port is not None else wanted))


# (policy type, the spec's rule list, the rule's peer list) per direction
_DIRECTIONS = {"ingress": ("Ingress", "ingress", "from"), "egress": ("Egress", "egress", "to")}


def rule_admits(
    cluster: Cluster,
    policy: NetworkPolicy,
    direction: str,
    rule: Mapping[str, Any],
    peer: Pod,
    destination: Pod,
    port: int,
    protocol: str,
) -> bool:
    """Whether one ingress/egress rule admits the peer pod (source for ingress, destination
    for egress) on port/protocol of the destination pod. No peers means every peer."""
    peers = rule.get(_DIRECTIONS[direction][2])
    if peers and not any(peer_matches(cluster, policy, entry, peer) for entry in peers):
        return False
    return ports_match(rule.get("ports"), destination, port, protocol)


@dataclass(frozen=True)
class SideDecision:
    """One side of a connection: the destination's ingress or the source's egress."""

    direction: str  # "ingress" | "egress"
    pod: str  # "ns/name" whose policies judge this side (dst for ingress, src for egress)
    isolated: bool  # some policy of this direction selects that pod
    selecting: tuple[str, ...]  # policy keys of this direction selecting the pod, manifest order
    allowing: tuple[tuple[str, int], ...]  # (policy key, rule index) of rules admitting it
    allowed: bool  # not isolated, or some rule admits


@dataclass(frozen=True)
class Decision:
    """A verdict and the reasons behind it: allowed iff both sides allow."""

    source: str
    destination: str
    port: int
    protocol: str
    egress: SideDecision
    ingress: SideDecision
    allowed: bool  # egress.allowed and ingress.allowed


def decide(cluster: Cluster, source: Pod, destination: Pod, port: int, protocol: str) -> Decision:
    """Whether source may open port/protocol on destination, and which policies and rules say so."""
    egress = _decide_side(cluster, "egress", source, destination, destination, port, protocol)
    ingress = _decide_side(cluster, "ingress", destination, source, destination, port, protocol)
    return Decision(
        source.key,
        destination.key,
        port,
        protocol,
        egress,
        ingress,
        egress.allowed and ingress.allowed,
    )


def _decide_side(
    cluster: Cluster,
    direction: str,
    subject: Pod,
    peer: Pod,
    destination: Pod,
    port: int,
    protocol: str,
) -> SideDecision:
    policy_type, rules_key, _peers_key = _DIRECTIONS[direction]
    selecting: list[str] = []
    allowing: list[tuple[str, int]] = []
    for policy in cluster.policies:
        if policy_type not in policy.policy_types or not policy_selects(policy, subject):
            continue
        selecting.append(policy.key)
        for index, rule in enumerate(policy.spec.get(rules_key) or ()):
            if rule_admits(cluster, policy, direction, rule, peer, destination, port, protocol):
                allowing.append((policy.key, index))
    isolated = bool(selecting)
    return SideDecision(
        direction,
        subject.key,
        isolated,
        tuple(selecting),
        tuple(allowing),
        not isolated or bool(allowing),
    )


def ingress_allowed(cluster: Cluster, src: Pod, dst: Pod, port: int, protocol: str) -> bool:
    """Whether dst's ingress policies (if any select it) admit src on port/protocol."""
    return _decide_side(cluster, "ingress", dst, src, dst, port, protocol).allowed


def egress_allowed(cluster: Cluster, src: Pod, dst: Pod, port: int, protocol: str) -> bool:
    """Whether src's egress policies (if any select it) admit dst on port/protocol."""
    return _decide_side(cluster, "egress", src, dst, dst, port, protocol).allowed


def is_allowed(cluster: Cluster, src: Pod, dst: Pod, port: int, protocol: str) -> bool:
    """A connection is allowed iff dst's ingress AND src's egress allow it (see decide)."""
    return decide(cluster, src, dst, port, protocol).allowed


# --------------------------------------------------------------------------- expect


@dataclass(frozen=True, slots=True)
class IndexedRule:
    """One rule of one policy, with its pod sets as bitmasks over Cluster.pods' indices."""

    policy: str  # the policy's key
    index: int  # the rule's index in spec.ingress or spec.egress
    peers: int  # the pods its from/to names (every pod when it names none)
    ports: Sequence[Mapping[str, Any]] | None
    selected: int  # the pods its policy selects


@dataclass(frozen=True, slots=True)
class ProbeColumn:
    """One destination and port, and the verdict for every source (decide's, computed at once).

    Bitmasks are over Cluster.pods' indices; `allowed_from` never holds the destination itself.
    """

    destination: int
    port: int
    protocol: str
    allowed_from: int
    by_ingress: int  # the sources the destination's ingress admits
    by_egress: int  # the sources whose egress admits the destination
    ingress_rules: tuple[IndexedRule, ...]  # rules of policies selecting it that admit the port
    egress_rules: tuple[IndexedRule, ...]  # egress rules naming it that admit the port


class ClusterIndex:
    """The cluster precomputed for the whole matrix: which policies select each pod and which
    pods each rule names, as bitmasks over pod indices, so that one destination and port is a
    few integer operations per rule. It uses the same matchers as decide()."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.pods = cluster.pods
        self.everyone = (1 << len(self.pods)) - 1
        self.addresses: list[IPAddress | None] = [
            None if pod.ip is None else ipaddress.ip_address(pod.ip) for pod in self.pods
        ]
        self.by_namespace: dict[str, int] = {}
        for index, pod in enumerate(self.pods):
            self.by_namespace[pod.namespace] = self.by_namespace.get(pod.namespace, 0) | (
                1 << index
            )
        self._peer_cache: dict[tuple[str, str], int] = {}
        self._selector_cache: dict[tuple[str, str], int] = {}
        self._ports_cache: dict[tuple[int, tuple[ContainerPort, ...], int, str], bool] = {}
        self.ingress_rules_of: list[list[IndexedRule]] = [[] for _ in self.pods]
        self.ingress_selecting_of: list[list[str]] = [[] for _ in self.pods]
        self.egress_rules_to: list[list[IndexedRule]] = [[] for _ in self.pods]
        # Egress policies per namespace: (key, the pods it selects); only they can judge its pods.
        self.egress_policies_in: dict[str, list[tuple[str, int]]] = {}
        self.ingress_isolated = 0
        self.egress_isolated = 0
        for policy in cluster.policies:
            self._add_policy(policy)

    def _add_policy(self, policy: NetworkPolicy) -> None:
        selected = self._pods_selected(policy.namespace, policy.spec.get("podSelector"))
        types = policy.policy_types
        if "Ingress" in types:
            self.ingress_isolated |= selected
            rules = [
                IndexedRule(
                    policy.key,
                    index,
                    self._peers_mask(policy, rule.get("from")),
                    rule.get("ports"),
                    selected,
                )
                for index, rule in enumerate(policy.spec.get("ingress") or ())
            ]
            for index in bit_indices(selected):
                self.ingress_rules_of[index].extend(rules)
                self.ingress_selecting_of[index].append(policy.key)
        if "Egress" in types:
            self.egress_isolated |= selected
            self.egress_policies_in.setdefault(policy.namespace, []).append((policy.key, selected))
            for index, rule in enumerate(policy.spec.get("egress") or ()):
                compiled = IndexedRule(
                    policy.key,
                    index,
                    self._peers_mask(policy, rule.get("to")),
                    rule.get("ports"),
                    selected,
                )
                for destination in bit_indices(compiled.peers):
                    self.egress_rules_to[destination].append(compiled)

    def _pods_selected(self, namespace: str, selector: Mapping[str, Any] | None) -> int:
        candidates = self.by_namespace.get(namespace, 0)
        if not selector or not candidates:
            return candidates
        key = (namespace, repr(selector))
        cached = self._selector_cache.get(key)
        if cached is None:
            cached = 0
            for index in bit_indices(candidates):
                if selector_matches(selector, self.pods[index].labels):
                    cached |= 1 << index
            self._selector_cache[key] = cached
        return cached

    def _peers_mask(self, policy: NetworkPolicy, peers: Sequence[Mapping[str, Any]] | None) -> int:
        if not peers:
            return self.everyone
        mask = 0
        for peer in peers:
            key = (policy.namespace, repr(peer))
            cached = self._peer_cache.get(key)
            if cached is None:
                cached = self._peer_mask(policy, peer)
                self._peer_cache[key] = cached
            mask |= cached
        return mask

    def _peer_mask(self, policy: NetworkPolicy, peer: Mapping[str, Any]) -> int:
        block = peer.get("ipBlock")
        if block is not None:
            cidr, excepted = _block_networks(block)
            mask = 0
            for index, address in enumerate(self.addresses):
                if address is not None and _address_in_networks(address, cidr, excepted):
                    mask |= 1 << index
            return mask
        namespace_selector = peer.get("namespaceSelector")
        if namespace_selector is None:
            namespaces = [policy.namespace]
        else:
            namespaces = [
                name
                for name in self.by_namespace
                if selector_matches(namespace_selector, self.cluster.namespace_labels(name))
            ]
        mask = 0
        for name in namespaces:
            mask |= self._pods_selected(name, peer.get("podSelector"))
        return mask

    def _ports_admit(self, rule: IndexedRule, pod: Pod, port: int, protocol: str) -> bool:
        if not rule.ports:
            return True
        key = (id(rule.ports), pod.ports, port, protocol)
        cached = self._ports_cache.get(key)
        if cached is None:
            cached = self._ports_cache[key] = ports_match(rule.ports, pod, port, protocol)
        return cached

    def column(self, destination: int, port: int, protocol: str) -> ProbeColumn:
        """Every source's verdict on one destination and port, with the rules that admit it."""
        pod = self.pods[destination]
        ingress_rules = tuple(
            rule
            for rule in self.ingress_rules_of[destination]
            if self._ports_admit(rule, pod, port, protocol)
        )
        if self.ingress_isolated >> destination & 1:
            by_ingress = 0
            for rule in ingress_rules:
                by_ingress |= rule.peers
        else:
            by_ingress = self.everyone
        egress_rules = tuple(
            rule
            for rule in self.egress_rules_to[destination]
            if self._ports_admit(rule, pod, port, protocol)
        )
        by_egress = self.everyone & ~self.egress_isolated
        for rule in egress_rules:
            by_egress |= rule.selected
        allowed = by_ingress & by_egress & ~(1 << destination)
        return ProbeColumn(
            destination, port, protocol, allowed, by_ingress, by_egress, ingress_rules, egress_rules
        )


def bit_indices(mask: int) -> list[int]:
    """The indices of the set bits of a non-negative integer, lowest first."""
    bits = bin(mask)[:1:-1]
    indices = []
    index = bits.find("1")
    while index >= 0:
        indices.append(index)
        index = bits.find("1", index + 1)
    return indices


def check_probe_ports(ports: Sequence[tuple[int, str]] | None) -> None:
    """ValueError naming the first port/protocol that is not 1-65535 and TCP, UDP or SCTP."""
    for port, protocol in ports or ():
        if not _is_port_number(port) or protocol not in PROTOCOLS:
            raise ValueError(
                f"probe port {port}/{protocol}: expected 1-65535 and one of {', '.join(PROTOCOLS)}"
            )


def probe_columns(
    index: ClusterIndex, ports: Sequence[tuple[int, str]] | None = None
) -> Iterator[ProbeColumn]:
    """One column per destination pod and port (default: the destination's containerPorts,
    each port/protocol once), destination by destination in manifest order."""
    check_probe_ports(ports)
    for destination, pod in enumerate(index.pods):
        wanted = dict.fromkeys((p.port, p.protocol) for p in pod.ports) if ports is None else ports
        for port, protocol in wanted:
            yield index.column(destination, port, protocol)


def expect(cluster: Cluster, ports: Sequence[tuple[int, str]] | None = None) -> list[Probe]:
    """Every ordered pair of distinct pods, on each port (default: the destination's ports).

    Probes come source by source, then destination, then port, in the order pods were loaded.
    For large clusters, stream probe_columns instead: this list holds every probe.
    """
    check_probe_ports(ports)
    columns = list(probe_columns(ClusterIndex(cluster), ports))
    keys = [pod.key for pod in cluster.pods]
    probes: list[Probe] = []
    for source, source_key in enumerate(keys):
        probes.extend(
            Probe(
                source_key,
                keys[column.destination],
                column.port,
                column.protocol,
                bool(column.allowed_from >> source & 1),
            )
            for column in columns
            if column.destination != source
        )
    return probes


def probes_document(probes: Iterable[Probe]) -> dict[str, list[dict[str, Any]]]:
    """`expect -o json`: {"probes": [{"from", "to", "port", "protocol", "allowed"}]}."""
    return {
        "probes": [
            {
                "from": probe.source,
                "to": probe.destination,
                "port": probe.port,
                "protocol": probe.protocol,
                "allowed": probe.allowed,
            }
            for probe in probes
        ]
    }


def unaddressed_pods_near_ip_blocks(cluster: Cluster) -> list[tuple[Pod, tuple[str, ...]]]:
    """Pods without an IP (not yet run, or pending) and the policies whose ipBlock peers could
    match them once they have one: their verdicts against those policies may change then."""
    with_blocks = tuple(
        policy.key
        for policy in cluster.policies
        if any(
            "ipBlock" in peer
            for policy_type, rules_key, peers_key in _DIRECTIONS.values()
            if policy_type in policy.policy_types
            for rule in policy.spec.get(rules_key) or ()
            for peer in rule.get(peers_key) or ()
        )
    )
    if not with_blocks:
        return []
    return [
        (pod, with_blocks)
        for pod in (*cluster.pods, *cluster.ignored)
        if pod.ip is None and not pod.host_network and pod.phase not in FINISHED_PHASES
    ]
