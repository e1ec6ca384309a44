"""A Kubernetes API endpoint on 127.0.0.1 that answers kubectl from stored responses.

There is no API server on this machine (no K3s, no kube-apiserver package), so the tests that run
the roles' kubectl commands point the real kubectl binary at this instead. The responses in
tests/data/kube-api/ are written by hand in the shape a K3s v1.31 API server returns them (its
discovery lists and objects, trimmed to the resources the roles use); none was captured from a
running server here. It answers what kubectl asks for the commands the roles use:

- discovery (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`), legacy form: kubectl
  1.27+ asks for the aggregated form first and falls back when it gets the plain lists, as it
  does from older servers;
- request bodies as JSON, or as protobuf for the fields kubectl 1.32+ sends that way;
- reads (get one, list one namespace or all of them, `fieldSelector=spec.nodeName=`), creates
  (`POST`, `?dryRun=All` answered without storing), patches (strategic merge as the API server
  applies it to the fields the recorded objects use, merge patch), deletes and pod evictions,
  against objects the test seeds from the stored JSON;
- everything else: a 404 `Status`, as the API server answers an unknown path.

Every request is kept in `requests` (method, path, query), so a test can check what kubectl did.
"""

from __future__ import annotations

import copy
import http.server
import itertools
import json
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).resolve().parent / "data" / "kube-api"

# Discovery documents by request path (each file a recorded response body).
DISCOVERY = {
    "/api": "api.json",
    "/apis": "apis.json",
    "/api/v1": "api-v1.json",
    "/apis/apps/v1": "apis-apps-v1.json",
    "/apis/policy/v1": "apis-policy-v1.json",
    "/apis/networking.k8s.io/v1": "apis-networking.k8s.io-v1.json",
}

# List keys the API server merges by (strategic merge patch) for the objects kept here.
MERGE_KEYS = ("name", "containerPort", "port", "type")


# kubectl 1.32 and later send the objects of typed requests (create namespace, an eviction) as
# protobuf: "k8s\0" and a runtime.Unknown {typeMeta {apiVersion, kind}, raw}. The fields those
# requests carry are read back into JSON: ObjectMeta's name, namespace, labels, annotations, and
# an Eviction's deleteOptions.dryRun (field numbers of k8s.io/api's generated.proto).
KUBERNETES_PROTOBUF = "application/vnd.kubernetes.protobuf"


def _wire_fields(data: bytes) -> dict[int, list[Any]]:
    fields: dict[int, list[Any]] = {}
    position = 0

    def varint() -> int:
        nonlocal position
        number, shift = 0, 0
        while True:
            byte = data[position]
            position += 1
            number |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return number

    while position < len(data):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value: Any = varint()
        elif wire_type == 2:
            size = varint()
            value, position = data[position : position + size], position + size
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, position = data[position : position + size], position + size
        else:
            raise ValueError(f"protobuf wire type {wire_type} is not read here")
        fields.setdefault(number, []).append(value)
    return fields


def _text(fields: dict[int, list[Any]], number: int) -> str:
    return bytes(fields.get(number, [b""])[0]).decode()


def _string_map(entries: list[bytes]) -> dict[str, str]:
    pairs = (_wire_fields(entry) for entry in entries)
    return {_text(pair, 1): _text(pair, 2) for pair in pairs}


def protobuf_object(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object, with the fields kubectl's requests carry."""
    if not body.startswith(b"k8s\x00"):
        raise ValueError("not a Kubernetes protobuf message")
    unknown = _wire_fields(body[4:])
    type_meta = _wire_fields(unknown[1][0])
    raw = _wire_fields(unknown.get(2, [b""])[0])
    meta = _wire_fields(raw.get(1, [b""])[0])
    metadata: dict[str, Any] = {"name": _text(meta, 1)}
    if meta.get(3):
        metadata["namespace"] = _text(meta, 3)
    if meta.get(11):
        metadata["labels"] = _string_map(meta[11])
    if meta.get(12):
        metadata["annotations"] = _string_map(meta[12])
    document: dict[str, Any] = {
        "apiVersion": _text(type_meta, 1),
        "kind": _text(type_meta, 2),
        "metadata": metadata,
    }
    if document["kind"] == "Eviction" and raw.get(2):
        delete_options = _wire_fields(raw[2][0])
        document["deleteOptions"] = {
            "dryRun": [bytes(v).decode() for v in delete_options.get(5, [])]
        }
    return document


def recorded(name: str) -> Any:
    return json.loads((RECORDED / name).read_text())


# kubectl 1.20 reads the OpenAPI v2 document (protobuf, gnostic's openapi.v2.Document) before a
# server-side dry run, to check that the kind's PATCH takes `dryRun`. The API server's document
# has, for each kind, a path whose `patch` operation carries x-kubernetes-group-version-kind and a
# query parameter `dryRun`; only those fields are served here, with the document's field numbers.
# kubectl asks for it as application/com.github.proto-openapi.spec.v2@v1.0+protobuf; the API
# server answers with this content type.
OPENAPI_V2_CONTENT_TYPE = "application/octet-stream"


def _varint(number: int) -> bytes:
    encoded = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        encoded.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(encoded)


def _field(number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def openapi_v2_document(resources: Iterable[Resource]) -> bytes:
    """The OpenAPI v2 document's PATCH operations for `resources`, protobuf-encoded."""
    paths = b""
    for resource in resources:
        group, _, version = resource.group_version.rpartition("/")
        gvk = f'group: "{group}"\nkind: {resource.kind}\nversion: {version}\n'
        query_parameter = _field(4, "dryRun") + _field(2, "query") + _field(6, "string")
        parameter = _field(1, _field(2, _field(3, query_parameter)))  # ParametersItem.parameter
        extension = _field(1, "x-kubernetes-group-version-kind") + _field(2, _field(2, gvk))
        operation = _field(8, parameter) + _field(13, extension)
        namespace = "namespaces/{namespace}/" if resource.namespaced else ""
        path = f"{resource.prefix}/{namespace}{resource.name}/{{name}}"
        paths += _field(2, _field(1, path) + _field(2, _field(8, operation)))
    info = _field(1, "Kubernetes") + _field(2, "v1.31.12+k3s1")
    return _field(1, "2.0") + _field(2, info) + _field(8, paths)


@dataclass(frozen=True)
class Resource:
    """One API resource as discovery describes it."""

    group_version: str  # "v1" or "<group>/v1"
    name: str  # plural, such as "networkpolicies"
    kind: str
    namespaced: bool

    @property
    def prefix(self) -> str:
        return "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"


def discovered_resources() -> dict[tuple[str, str], Resource]:
    resources = {}
    for path, name in DISCOVERY.items():
        document = recorded(name)
        if document.get("kind") != "APIResourceList":
            continue
        for entry in document["resources"]:
            if "/" in entry["name"]:
                continue
            resource = Resource(
                document["groupVersion"], entry["name"], entry["kind"], entry["namespaced"]
            )
            resources[(path, entry["name"])] = resource
    return resources


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in MERGE_KEYS:
        if all(key in item for item in items):
            return key
    return None


def strategic_merge(live: Any, patch: Any) -> Any:
    """Apply a strategic merge patch (or a JSON merge patch) the way the API server does.

    Maps merge key by key, `null` deletes, `$`-directives (`$setElementOrder/...`, `$patch`,
    `$retainKeys`) are dropped, lists of maps with a merge key are merged item by item, other
    lists are replaced.
    """
    if not isinstance(patch, dict) or not isinstance(live, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(live)
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            merged[key] = strategic_merge(merged.get(key, {}), value)
        elif isinstance(value, list) and isinstance(merged.get(key), list):
            merge_key = _merge_key(value + merged[key])
            if merge_key is None:
                merged[key] = copy.deepcopy(value)
                continue
            by_key = {item[merge_key]: item for item in merged[key]}
            for item in value:
                by_key[item[merge_key]] = strategic_merge(by_key.get(item[merge_key], {}), item)
            merged[key] = list(by_key.values())
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass
class RecordedKubeAPI:
    """The endpoint's state: the objects it holds and the requests it answered."""

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    resources: dict[tuple[str, str], Resource] = field(default_factory=discovered_resources)
    _versions: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def resource_of(self, api_version: str, kind: str) -> Resource:
        for resource in self.resources.values():
            if resource.group_version == api_version and resource.kind == kind:
                return resource
        raise KeyError(f"{api_version} {kind} is not in the recorded discovery")

    def add(self, *documents: dict[str, Any]) -> None:
        """Seed objects (as the API server returns them)."""
        for document in documents:
            resource = self.resource_of(document["apiVersion"], document["kind"])
            self._store(resource, document["metadata"].get("namespace", ""), document)

    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Any:
        resource = self.resource_of(api_version, kind)
        return self.objects.get((resource.prefix + "/" + resource.name, namespace, name))

    def _store(self, resource: Resource, namespace: str, document: dict[str, Any]) -> None:
        metadata = document.setdefault("metadata", {})
        metadata["resourceVersion"] = str(next(self._versions))
        metadata.setdefault("uid", f"00000000-0000-4000-8000-{len(self.objects):012d}")
        metadata.setdefault("creationTimestamp", "2026-11-29T10:00:00Z")
        if resource.namespaced:
            metadata["namespace"] = namespace
        if resource.kind == "Namespace":
            metadata.setdefault("labels", {})["kubernetes.io/metadata.name"] = metadata["name"]
            document.setdefault("spec", {"finalizers": ["kubernetes"]})
            document.setdefault("status", {"phase": "Active"})
        key = (resource.prefix + "/" + resource.name, namespace, metadata["name"])
        self.objects[key] = document

    # The request handling, one method per verb; each returns (status code, body).

    def answer(self, method: str, url: str, body: bytes) -> tuple[int, Any]:
        parsed = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parsed.query)
        path = parsed.path.rstrip("/")
        with self._lock:
            self.requests.append((method, path, query))
            if method == "GET" and path in DISCOVERY:
                return 200, recorded(DISCOVERY[path])
            if method == "GET" and path == "/openapi/v2":
                return 200, openapi_v2_document(self.resources.values())
            located = self._locate(path)
            if located is None:
                return 404, status(
                    404, "NotFound", "the server could not find the requested resource"
                )
            resource, namespace, name, subresource = located
            payload = json.loads(body) if body else None
            # kubectl asks for a dry run in the query, or in the body's (delete) options.
            options = payload.get("deleteOptions", payload) if isinstance(payload, dict) else {}
            dry_run = "All" in query.get("dryRun", []) + list(options.get("dryRun") or [])
            if subresource == "eviction" and method == "POST":
                return self._evict(resource, namespace, name, dry_run)
            if subresource:
                return 404, status(
                    404, "NotFound", f"{resource.name}/{subresource} is not recorded"
                )
            if method == "GET" and name:
                return self._get(resource, namespace, name)
            if method == "GET":
                return self._list(resource, namespace, query)
            if method == "POST" and not name:
                return self._create(resource, namespace, payload, dry_run)
            if method == "PATCH" and name:
                return self._patch(resource, namespace, name, payload, dry_run)
            if method == "DELETE" and name:
                return self._delete(resource, namespace, name, dry_run)
            return 405, status(405, "MethodNotAllowed", f"{method} {path} is not supported")

    def _locate(self, path: str) -> tuple[Resource, str, str, str] | None:
        for prefix in ("/api/v1", *(p for p in DISCOVERY if p.startswith("/apis/"))):
            if not path.startswith(prefix + "/"):
                continue
            parts = path[len(prefix) + 1 :].split("/")
            namespace = ""
            if parts[0] == "namespaces" and len(parts) >= 3:
                namespace, parts = parts[1], parts[2:]
            resource = self.resources.get((prefix, parts[0]))
            if resource is None or len(parts) > 3:
                return None
            name = parts[1] if len(parts) > 1 else ""
            subresource = parts[2] if len(parts) > 2 else ""
            return resource, namespace, name, subresource
        return None

    def _key(self, resource: Resource, namespace: str, name: str) -> tuple[str, str, str]:
        return (resource.prefix + "/" + resource.name, namespace, name)

    def _not_found(self, resource: Resource, name: str) -> tuple[int, Any]:
        group = resource.group_version.rpartition("/")[0]
        qualified = f"{resource.name}.{group}" if group else resource.name
        return 404, status(404, "NotFound", f'{qualified} "{name}" not found')

    def _get(self, resource: Resource, namespace: str, name: str) -> tuple[int, Any]:
        found = self.objects.get(self._key(resource, namespace, name))
        return (200, found) if found is not None else self._not_found(resource, name)

    def _list(
        self, resource: Resource, namespace: str, query: dict[str, list[str]]
    ) -> tuple[int, Any]:
        collection = resource.prefix + "/" + resource.name
        items: Iterable[dict[str, Any]] = (
            obj
            for (where, obj_namespace, _), obj in sorted(self.objects.items())
            if where == collection and (not namespace or obj_namespace == namespace)
        )
        for selector in query.get("fieldSelector", []):
            for term in filter(None, selector.split(",")):
                field_path, _, wanted = term.partition("=")
                items = [obj for obj in items if _field_value(obj, field_path) == wanted]
        return 200, {
            "kind": resource.kind + "List",
            "apiVersion": resource.group_version,
            "metadata": {"resourceVersion": str(next(self._versions))},
            "items": list(items),
        }

    def _create(
        self, resource: Resource, namespace: str, payload: Any, dry_run: bool
    ) -> tuple[int, Any]:
        name = payload["metadata"]["name"]
        if self._key(resource, namespace, name) in self.objects:
            group = resource.group_version.rpartition("/")[0]
            qualified = f"{resource.name}.{group}" if group else resource.name
            return 409, status(409, "AlreadyExists", f'{qualified} "{name}" already exists')
        created = copy.deepcopy(payload)
        if dry_run:
            created.setdefault("metadata", {})["uid"] = "dry-run"
            if resource.namespaced:
                created["metadata"]["namespace"] = namespace
            return 201, created
        self._store(resource, namespace, created)
        return 201, created

    def _patch(
        self, resource: Resource, namespace: str, name: str, payload: Any, dry_run: bool
    ) -> tuple[int, Any]:
        live = self.objects.get(self._key(resource, namespace, name))
        if live is None:
            return self._not_found(resource, name)
        patched = strategic_merge(live, payload)
        patched["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        if dry_run or patched == live:
            return 200, patched
        self._store(resource, namespace, patched)
        return 200, patched

    def _delete(
        self, resource: Resource, namespace: str, name: str, dry_run: bool
    ) -> tuple[int, Any]:
        key = self._key(resource, namespace, name)
        if key not in self.objects:
            return self._not_found(resource, name)
        gone = self.objects[key] if dry_run else self.objects.pop(key)
        return 200, gone

    def _evict(
        self, resource: Resource, namespace: str, name: str, dry_run: bool
    ) -> tuple[int, Any]:
        key = self._key(resource, namespace, name)
        if key not in self.objects:
            return self._not_found(resource, name)
        if not dry_run:
            del self.objects[key]
        return 201, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}


def _field_value(obj: dict[str, Any], field_path: str) -> str:
    value: Any = obj
    for part in field_path.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return str(value)


class _Handler(http.server.BaseHTTPRequestHandler):
    api: RecordedKubeAPI

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if body and self.headers.get("Content-Type", "") == KUBERNETES_PROTOBUF:
            body = json.dumps(protobuf_object(body)).encode()
        code, document = self.api.answer(self.command, self.path, body)
        protobuf = isinstance(document, bytes)
        body = document if protobuf else json.dumps(document).encode()
        self.send_response(code)
        self.send_header(
            "Content-Type", OPENAPI_V2_CONTENT_TYPE if protobuf else "application/json"
        )
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(api: RecordedKubeAPI, kubeconfig: Path) -> Iterator[str]:
    """Serve `api` on 127.0.0.1 (a free port) and write a kubeconfig for it; yields the URL."""
    handler = type("Handler", (_Handler,), {"api": api})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "recorded", "cluster": {"server": url}}],
                "users": [{"name": "recorded", "user": {"token": "recorded-token"}}],
                "contexts": [
                    {"name": "recorded", "context": {"cluster": "recorded", "user": "recorded"}}
                ],
                "current-context": "recorded",
            }
        )
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
