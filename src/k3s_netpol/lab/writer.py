"""Writing the compiled files, and reading back the seed a previous compile chose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from k3s_netpol.files import write_if_changed
from k3s_netpol.lab.common import LAB_FILE, CompiledLab, LabError
from k3s_netpol.lab.compiler import CompiledCluster
from k3s_netpol.lab.sync import check_seed


def write_compiled(compiled: CompiledLab | CompiledCluster, out_dir: str | Path) -> list[Path]:
    """Write the files into ``out_dir`` (a cluster's per-node files into ``<node>/``); returns
    those whose bytes changed.

    Each file is replaced atomically (written aside, then renamed) and only when it differs,
    so an unchanged compile leaves timestamps alone.
    """
    directory = Path(out_dir)
    changed: list[Path] = []
    for name, content in compiled.files().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if write_if_changed(path, content):
            changed.append(path)
    return changed


def _read_lab_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LabError(f"{path}: cannot read it: {error}") from None


def read_sync_summary(path: str | Path) -> dict[str, Any]:
    """What a sync chose, from a cluster lab.json: the seed, each node's orders, the deviations."""
    lab_path = Path(path)
    document = _read_lab_json(lab_path)
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        raise LabError(f"{lab_path}: expected the lab's description with `seed` and `nodes`")
    return {
        "seed": check_seed(document.get("seed")),
        "nodes": {
            node.get("name"): {
                "policy_order": node.get("policy_order"),
                "pod_order": node.get("pod_order"),
            }
            for node in document["nodes"]
            if isinstance(node, dict)
        },
        "deviations": document.get("deviations", []),
    }


def stored_seed(out_dir: str | Path) -> int | None:
    """The seed of the lab.json a previous compile wrote into ``out_dir``, or None if none."""
    path = Path(out_dir) / LAB_FILE
    if not path.is_file():
        return None
    document = _read_lab_json(path)
    if not isinstance(document, dict) or "seed" not in document:
        return None
    try:
        return check_seed(document["seed"])
    except LabError as error:
        raise LabError(f"{path}: {error}") from None
