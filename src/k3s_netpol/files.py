"""Controller-side files written atomically, and only when their content changes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_if_changed(path: Path, content: bytes, *, mode: int = 0o644) -> bool:
    """Replace ``path`` with ``content`` unless it already holds exactly those bytes.

    The new file is written beside ``path`` and renamed over it, so a reader never sees half a
    file, and an unchanged file keeps its timestamp. Missing parent directories are created.
    Returns whether the file was written.
    """
    if path.is_file() and path.read_bytes() == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True
