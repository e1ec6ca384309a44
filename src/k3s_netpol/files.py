"""Controller-side files: inputs read as UTF-8 text, outputs written by one rule.

`read_text` reads a file, or standard input for ``-``, as strict UTF-8; `InputFileError` names
the file when it is missing, unreadable or not UTF-8.

Outputs (`write_file`, `write_if_changed`), for every command:
- An absent path or a regular file is replaced atomically: the bytes go to a temporary file
  beside it, which is renamed over it, so a reader never sees half a file. An existing file keeps
  its mode and its owner; a new file gets ``mode``.
- A FIFO or a character device (``/dev/stdout``, ``/dev/null``, a pipe from ``>(...)``), also
  when reached through a symbolic link, is written through: opened and written, never replaced.
- Anything else is refused with `OutputError`, which names the path: a symbolic link to a file
  (replacing it would cut the link; name its target instead), a directory, a block device, a
  socket, a dangling link. So is a path whose directory cannot be created or written (read-only,
  /proc): the message names the path and the reason, and nothing is left behind.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

STDIN = "-"


class InputFileError(ValueError):
    """An input that cannot be read as text; the message names the file (`<stdin>` for -)."""


def read_text(path: str | Path) -> str:
    """The UTF-8 text of ``path``, or of standard input when ``path`` is ``-``."""
    from_stdin = str(path) == STDIN
    label = "<stdin>" if from_stdin else str(path)
    try:
        if not from_stdin:
            data = Path(path).read_bytes()
        elif hasattr(sys.stdin, "buffer"):
            data = sys.stdin.buffer.read()
        else:
            return sys.stdin.read()
    except FileNotFoundError:
        raise InputFileError(f"{label}: no such file") from None
    except OSError as error:
        raise InputFileError(f"{label}: cannot read: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputFileError(
            f"{label}: not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})"
        ) from None


class OutputError(OSError):
    """An output path that cannot be or must not be written; the message names it."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _writes_through(path: Path) -> bool:
    """Whether ``path`` is a FIFO or a character device (after following links), to be written
    through; raise `OutputError` for any other target that is not absent or a regular file."""
    try:
        own = path.lstat()
    except FileNotFoundError:
        return False
    except OSError as error:
        raise OutputError(f"{path}: cannot write there: {error.strerror or error}") from None
    try:
        target = path.stat()
    except OSError:
        raise OutputError(
            f"{path}: a symbolic link to nothing; name a regular file instead"
        ) from None
    if stat.S_ISFIFO(target.st_mode) or stat.S_ISCHR(target.st_mode):
        return True
    if stat.S_ISLNK(own.st_mode):
        raise OutputError(
            f"{path}: a symbolic link; refusing to replace it (name its target, "
            f"{os.path.realpath(path)}, to write that file)"
        )
    if not stat.S_ISREG(target.st_mode):
        raise OutputError(f"{path}: {_kind(target.st_mode)}; refusing to replace it")
    return False


def write_file(path: Path, content: bytes, *, mode: int = 0o644) -> None:
    """Write ``content`` to ``path`` by the module's rule (see above); raise `OutputError`
    naming the path when it is refused or cannot be written. Missing directories are created."""
    if _writes_through(path):
        _write_through(path, content)
        return
    try:
        existing: os.stat_result | None = path.stat()
    except FileNotFoundError:
        existing = None
    except OSError as error:
        raise OutputError(f"{path}: cannot write there: {error.strerror or error}") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise OutputError(
            f"{path}: cannot write in {path.parent}: {error.strerror or error}"
        ) from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
        if existing is None:
            os.chmod(temporary, mode)
        else:
            os.chmod(temporary, stat.S_IMODE(existing.st_mode))
            _keep_owner(Path(temporary), existing, path)
        os.replace(temporary, path)
    except OutputError:
        Path(temporary).unlink(missing_ok=True)
        raise
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_through(path: Path, content: bytes) -> None:
    """Write into the FIFO or character device at ``path``: opened without creating or
    truncating, and checked again once open, so a file swapped in meanwhile is left alone."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None
    with os.fdopen(descriptor, "wb") as stream:
        mode = os.fstat(descriptor).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            raise OutputError(f"{path}: changed while being written; nothing written")
        try:
            stream.write(content)
            stream.flush()
        except OSError as error:
            raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None


def _keep_owner(temporary: Path, existing: os.stat_result, path: Path) -> None:
    written = temporary.stat()
    if (written.st_uid, written.st_gid) == (existing.st_uid, existing.st_gid):
        return
    try:
        os.chown(temporary, existing.st_uid, existing.st_gid)
    except PermissionError:
        raise OutputError(
            f"{path}: owned by {existing.st_uid}:{existing.st_gid}; replacing it would change "
            "its owner: run as that user (or root), or write elsewhere"
        ) from None


def write_if_changed(path: Path, content: bytes, *, mode: int = 0o644) -> bool:
    """`write_file` unless ``path`` is a regular file holding exactly ``content`` already (it
    then keeps its timestamp). Returns whether anything was written."""
    try:
        unchanged = not path.is_symlink() and path.is_file() and path.read_bytes() == content
    except OSError:
        unchanged = False
    if unchanged:
        return False
    write_file(path, content, mode=mode)
    return True
