"""The multitenant NetworkPolicy bundle of the tutorial, rendered from a typed configuration.

Per target namespace: deny-by-default (always), then the allow-policies that are switched on
(allow-same-namespace, allow-all-svclbtraefik-ingress, allow-all-traefik-v121-ingress,
allow-from-cattle-monitoring-system), and optionally the tutorial's sample workload (an nginx
Deployment and the Service ``nginx-service``). The tutorial's typos are fixed: one apiVersion per
object, ``nginx-service``, ``kube-router.io/netpol-nflog-limit-burst``. Namespaces are selected by
``kubernetes.io/metadata.name``, which the API server sets on every namespace.

``validate_manifests`` checks a user's policy file offline, naming the file and the field.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import yaml

from k3s_netpol import kuberouter
from k3s_netpol.files import InputFileError, read_text
from k3s_netpol.model import (
    NAMESPACE_NAME_LABEL,
    ManifestError,
    cluster_from_documents,
    expand_documents,
    object_metadata,
)

NETWORK_POLICY_API: Final = "networking.k8s.io/v1"
MANAGED_BY_LABELS: Final = {
    "app.kubernetes.io/managed-by": "k3s-netpol",
    "app.kubernetes.io/part-of": "k3s-netpol-bundle",
}
SAMPLE_APP_LABEL: Final = {"app": "nginx"}
SAMPLE_SERVICE_NAME: Final = "nginx-service"
SAMPLE_DEPLOYMENT_NAME: Final = "nginx"
INT32_MAX: Final = 2**31 - 1  # Kubernetes' replicas field is an int32

POLICY_DENY_BY_DEFAULT: Final = "deny-by-default"
POLICY_ALLOW_SAME_NAMESPACE: Final = "allow-same-namespace"
POLICY_ALLOW_SVCLB_TRAEFIK: Final = "allow-all-svclbtraefik-ingress"
POLICY_ALLOW_TRAEFIK_V121: Final = "allow-all-traefik-v121-ingress"
POLICY_ALLOW_FROM_MONITORING: Final = "allow-from-cattle-monitoring-system"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IMAGE_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_NFLOG_ANNOTATIONS: Final = (kuberouter.NFLOG_LIMIT_ANNOTATION, kuberouter.NFLOG_BURST_ANNOTATION)


class BundleConfigError(ValueError):
    """A bad bundle setting; ``field`` names it, ``reason`` says what is wrong."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class BundleConfig:
    """What the bundle contains. Field names are the configuration keys (and, prefixed with
    ``netpol_bundle_``, the Ansible role's variables)."""

    namespaces: tuple[str, ...] = ("sample1", "sample2")
    allow_same_namespace: bool = True
    allow_svclbtraefik_ingress: bool = True
    allow_traefik_v121_ingress: bool = True
    allow_from_monitoring: bool = True
    monitoring_namespace: str = "cattle-monitoring-system"
    nflog_limit: str | None = None
    nflog_limit_burst: int | None = None
    namespace_manifests: bool = True
    sample_workload: bool = True
    sample_image: str = "nginx:stable"
    sample_replicas: int = 1
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def annotations(self) -> dict[str, str]:
        """The nflog annotations every policy of the bundle carries (none when unset)."""
        annotations: dict[str, str] = {}
        if self.nflog_limit is not None:
            annotations[kuberouter.NFLOG_LIMIT_ANNOTATION] = self.nflog_limit
        if self.nflog_limit_burst is not None:
            annotations[kuberouter.NFLOG_BURST_ANNOTATION] = str(self.nflog_limit_burst)
        return annotations


CONFIG_KEYS: Final = tuple(config_field.name for config_field in fields(BundleConfig))
_BOOLEAN_KEYS: Final = (
    "allow_same_namespace",
    "allow_svclbtraefik_ingress",
    "allow_traefik_v121_ingress",
    "allow_from_monitoring",
    "namespace_manifests",
    "sample_workload",
)


def _validate(config: BundleConfig) -> None:
    if not config.namespaces:
        raise BundleConfigError("namespaces", "at least one target namespace is needed")
    seen: set[str] = set()
    for index, namespace in enumerate(config.namespaces):
        problem = namespace_name_problem(namespace)
        if problem:
            raise BundleConfigError(f"namespaces[{index}]", problem)
        if namespace in seen:
            raise BundleConfigError(f"namespaces[{index}]", f"{namespace!r} is listed twice")
        seen.add(namespace)
    problem = namespace_name_problem(config.monitoring_namespace)
    if problem:
        raise BundleConfigError("monitoring_namespace", problem)
    for name in _BOOLEAN_KEYS:
        value = getattr(config, name)
        if not isinstance(value, bool):
            raise BundleConfigError(name, f"expected true or false, got {value!r}")
    if config.nflog_limit is not None:
        try:
            kuberouter.parse_nflog_limit(config.nflog_limit)
        except ValueError as error:
            raise BundleConfigError("nflog_limit", str(error)) from None
    burst = config.nflog_limit_burst
    if burst is not None:
        if not _is_int(burst):
            raise BundleConfigError("nflog_limit_burst", f"expected an integer, got {burst!r}")
        try:
            kuberouter.parse_nflog_burst(str(burst))
        except ValueError as error:
            raise BundleConfigError("nflog_limit_burst", str(error)) from None
    image = config.sample_image
    if not isinstance(image, str) or not _IMAGE_REFERENCE.match(image):
        raise BundleConfigError("sample_image", f"{image!r} is not a container image reference")
    replicas = config.sample_replicas
    if not _is_int(replicas) or not 0 <= replicas <= INT32_MAX:
        raise BundleConfigError(
            "sample_replicas", f"expected an integer from 0 to {INT32_MAX}, got {replicas!r}"
        )
    if not isinstance(config.extra_labels, Mapping):
        raise BundleConfigError("extra_labels", f"expected a mapping, got {config.extra_labels!r}")
    for key, value in config.extra_labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BundleConfigError(
                f"extra_labels.{key}", f"expected a string value, got {value!r}"
            )
        problem = label_key_problem(key) or label_value_problem(value)
        if problem:
            raise BundleConfigError(f"extra_labels.{key}", problem)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def namespace_name_problem(name: object) -> str | None:
    """Why ``name`` is not a namespace name (an RFC 1123 label), or None."""
    if not isinstance(name, str):
        return f"expected a namespace name (a string), got {name!r}"
    if not name:
        return "a namespace name cannot be empty"
    if len(name) > 63:
        return f"{name!r} is longer than 63 characters"
    if not _DNS_LABEL.match(name):
        return (
            f"{name!r} is not a valid namespace name (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return None


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a label key (``[prefix/]name``), or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: the prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return f"label key {key!r}: the name must be 1-63 alphanumerics, '-', '_' or '.'"
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a label value, or None."""
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return f"label value {value!r}: at most 63 alphanumerics, '-', '_' or '.'"
    return None


def config_from_mapping(data: object, source: str = "config", key_prefix: str = "") -> BundleConfig:
    """Build a BundleConfig from a mapping (parsed YAML, or the role's variables).

    Keys are the field names with ``key_prefix`` in front; an unknown key, a wrong type or a bad
    value raises BundleConfigError naming ``source`` and the key as written.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise BundleConfigError(source, f"expected a mapping of settings, got {data!r}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key[len(key_prefix) :] if isinstance(key, str) and key.startswith(key_prefix) else ""
        if name not in CONFIG_KEYS:
            known = ", ".join(key_prefix + known_name for known_name in CONFIG_KEYS)
            raise BundleConfigError(f"{source}: {key}", f"unknown setting (known: {known})")
        values[name] = _coerce(name, value, f"{source}: {key}")
    try:
        return BundleConfig(**values)
    except BundleConfigError as error:
        raise BundleConfigError(f"{source}: {key_prefix}{error.field}", error.reason) from None


def _coerce(name: str, value: Any, where: str) -> Any:
    """Turn a parsed value into the field's type, or fail naming ``where``."""
    if name == "namespaces":
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise BundleConfigError(where, f"expected a list of namespace names, got {value!r}")
        return tuple(value)
    if name == "nflog_limit" and _is_int(value):
        return str(value)
    if name == "nflog_limit" and value is not None and not isinstance(value, str):
        raise BundleConfigError(where, f"expected a string such as '10/minute', got {value!r}")
    if name == "nflog_limit_burst" and isinstance(value, str):
        try:
            return kuberouter.parse_nflog_burst(value)
        except ValueError as error:
            raise BundleConfigError(where, str(error)) from None
    if name == "extra_labels" and value is None:
        return {}
    return value


def load_config(path: str | Path, key_prefix: str = "") -> BundleConfig:
    """Read a YAML settings file (keys as in BundleConfig, with ``key_prefix`` in front)."""
    try:
        text = read_text(path)
    except InputFileError as error:
        raise BundleConfigError(str(path), str(error).removeprefix(f"{path}: ")) from None
    return config_from_yaml(text, str(path), key_prefix)


def config_from_yaml(text: str, source: str, key_prefix: str = "") -> BundleConfig:
    """Parse YAML settings (a repeated key is an error) into a BundleConfig."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise BundleConfigError(source, _yaml_problem(error)) from None
    return config_from_mapping(data, source, key_prefix)


# --------------------------------------------------------------------------- rendering


def render(config: BundleConfig) -> list[dict[str, Any]]:
    """Every manifest of the bundle, in apply order: Namespaces, then per namespace its
    policies (deny-by-default first) and the sample workload."""
    manifests: list[dict[str, Any]] = []
    if config.namespace_manifests:
        manifests.extend(namespace_manifest(name, config) for name in config.namespaces)
    for namespace in config.namespaces:
        manifests.extend(policies(namespace, config))
        if config.sample_workload:
            manifests.extend(sample_workload(namespace, config))
    return manifests


def render_yaml(manifests: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML, keys in the order they were built."""
    header = "# Rendered by `k3s-netpol bundle render`; edit the configuration, not this file.\n"
    body = yaml.safe_dump_all(
        [dict(manifest) for manifest in manifests],
        sort_keys=False,
        default_flow_style=False,
        explicit_start=True,
    )
    return header + body


def _labels(config: BundleConfig, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**(extra or {}), **MANAGED_BY_LABELS, **config.extra_labels}


def namespace_manifest(name: str, config: BundleConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": _labels(config, {NAMESPACE_NAME_LABEL: name})},
    }


def _policy(
    namespace: str, name: str, config: BundleConfig, spec: dict[str, Any]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": _labels(config)}
    if config.annotations:
        metadata["annotations"] = config.annotations
    return {
        "apiVersion": NETWORK_POLICY_API,
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": spec,
    }


def monitoring_policy_name(config: BundleConfig) -> str:
    """``allow-from-<monitoring namespace>``: the tutorial's name with the default namespace."""
    return f"allow-from-{config.monitoring_namespace}"


def policies(namespace: str, config: BundleConfig) -> list[dict[str, Any]]:
    """The bundle's NetworkPolicies for one namespace, deny-by-default first."""
    ingress_only = ["Ingress"]
    result = [
        _policy(
            namespace,
            POLICY_DENY_BY_DEFAULT,
            config,
            {"podSelector": {}, "policyTypes": ingress_only},
        )
    ]
    if config.allow_same_namespace:
        result.append(
            _policy(
                namespace,
                POLICY_ALLOW_SAME_NAMESPACE,
                config,
                {
                    "podSelector": {},
                    "policyTypes": ingress_only,
                    "ingress": [{"from": [{"podSelector": {}}]}],
                },
            )
        )
    if config.allow_svclbtraefik_ingress:
        result.append(
            _policy(
                namespace,
                POLICY_ALLOW_SVCLB_TRAEFIK,
                config,
                {
                    "podSelector": {
                        "matchLabels": {"svccontroller.k3s.cattle.io/svcname": "traefik"}
                    },
                    "policyTypes": ingress_only,
                    "ingress": [{}],
                },
            )
        )
    if config.allow_traefik_v121_ingress:
        result.append(
            _policy(
                namespace,
                POLICY_ALLOW_TRAEFIK_V121,
                config,
                {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
                    "policyTypes": ingress_only,
                    "ingress": [{}],
                },
            )
        )
    if config.allow_from_monitoring:
        monitoring = {"matchLabels": {NAMESPACE_NAME_LABEL: config.monitoring_namespace}}
        result.append(
            _policy(
                namespace,
                monitoring_policy_name(config),
                config,
                {
                    "podSelector": {},
                    "policyTypes": ingress_only,
                    "ingress": [{"from": [{"namespaceSelector": monitoring}]}],
                },
            )
        )
    return result


def sample_workload(namespace: str, config: BundleConfig) -> list[dict[str, Any]]:
    """The tutorial's nginx Deployment and its Service, spelled ``nginx-service``."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": SAMPLE_DEPLOYMENT_NAME,
            "namespace": namespace,
            "labels": _labels(config, SAMPLE_APP_LABEL),
        },
        "spec": {
            "replicas": config.sample_replicas,
            "selector": {"matchLabels": dict(SAMPLE_APP_LABEL)},
            "template": {
                "metadata": {"labels": dict(SAMPLE_APP_LABEL)},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": config.sample_image,
                            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SAMPLE_SERVICE_NAME,
            "namespace": namespace,
            "labels": _labels(config, SAMPLE_APP_LABEL),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": dict(SAMPLE_APP_LABEL),
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 80}],
        },
    }
    return [deployment, service]


# --------------------------------------------------------------------------- validation


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key repeated in one mapping (the tutorial repeats apiVersion;
    plain YAML loaders keep the last value without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"a mapping key must be a string or a number, got a {type(key).__name__}",
                    key_node.start_mark,
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    position = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"malformed YAML: {position}{problem}"


def validate_manifests(path: str | Path) -> list[dict[str, Any]]:
    """Check a manifest file offline; return its documents (``List`` items expanded).

    Beyond the model's NetworkPolicy checks: YAML keys repeated in a mapping, every object's
    apiVersion/kind/metadata.name, NetworkPolicy apiVersion, namespace and object names, and the
    kube-router nflog annotations read strictly (a misspelt annotation key is an error too).
    Raises ManifestError naming the file and the field.
    """
    try:
        text = read_text(path)
    except InputFileError as error:
        raise ManifestError(str(error)) from None
    return validate_text(text, str(path))


def validate_text(text: str, label: str) -> list[dict[str, Any]]:
    """:func:`validate_manifests` for text already read; ``label`` names it in errors."""
    try:
        raw_documents = list(yaml.load_all(text, Loader=_UniqueKeyLoader))
    except yaml.YAMLError as error:
        raise ManifestError(f"{label}: {_yaml_problem(error)}") from None
    documents: list[tuple[str, Mapping[str, Any]]] = []
    for number, document in enumerate(raw_documents, start=1):
        if document is None:
            continue
        documents.extend(expand_documents(document, f"document {number}", label))
    if not documents:
        raise ManifestError(f"{label}: holds no Kubernetes object")
    for where, document in documents:
        _check_object(document, f"{label}: {where}")
    cluster_from_documents([document for _, document in documents], label)
    return [dict(document) for _, document in documents]


def _check_object(document: Mapping[str, Any], where: str) -> None:
    for key in ("apiVersion", "kind"):
        value = document.get(key)
        if not isinstance(value, str) or not value:
            raise ManifestError(f"{where}: {key}: expected a non-empty string, got {value!r}")
    kind = document["kind"]
    metadata, name = object_metadata(document, kind, where)
    context = f"{where} ({kind} {name})"
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise ManifestError(
            f"{context}: metadata.name: {name!r} is not a valid object name (lowercase letters, "
            "digits, '-' and '.')"
        )
    if kind == "Namespace":
        problem = namespace_name_problem(name)
        if problem:
            raise ManifestError(f"{context}: metadata.name: {problem}")
    namespace = metadata.get("namespace")
    if namespace is not None:
        problem = namespace_name_problem(namespace)
        if problem:
            raise ManifestError(f"{context}: metadata.namespace: {problem}")
    if kind != "NetworkPolicy":
        return
    if document["apiVersion"] != NETWORK_POLICY_API:
        raise ManifestError(
            f"{context}: apiVersion: {document['apiVersion']!r} is not {NETWORK_POLICY_API!r}"
        )
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise ManifestError(f"{context}: metadata.annotations: expected a mapping")
    for key, value in annotations.items():
        path = f"metadata.annotations[{key}]"
        if key == kuberouter.NFLOG_LIMIT_ANNOTATION:
            parse: Any = kuberouter.parse_nflog_limit
        elif key == kuberouter.NFLOG_BURST_ANNOTATION:
            parse = kuberouter.parse_nflog_burst
        elif isinstance(key, str) and "netpol-nflog" in key:
            raise ManifestError(
                f"{context}: {path}: unknown annotation; kube-router reads only "
                f"{' and '.join(_NFLOG_ANNOTATIONS)}"
            )
        else:
            continue
        if not isinstance(value, str):
            raise ManifestError(
                f"{context}: {path}: expected a string, got {value!r} (quote numbers)"
            )
        try:
            parse(value)
        except ValueError as error:
            raise ManifestError(f"{context}: {path}: {error}") from None
