"""Writing the compiled files, and reading back the seed a previous compile chose."""

from __future__ import annotations

import json
from pathlib import Path

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


def stored_seed(out_dir: str | Path) -> int | None:
    """The seed of the lab.json a previous compile wrote into ``out_dir``, or None if none."""
    path = Path(out_dir) / LAB_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LabError(f"{path}: cannot read the stored seed: {error}") from None
    if not isinstance(document, dict) or "seed" not in document:
        return None
    try:
        return check_seed(document["seed"])
    except LabError as error:
        raise LabError(f"{path}: {error}") from None
