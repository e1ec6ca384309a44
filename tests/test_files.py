import os
import stat
import threading
from pathlib import Path

import pytest

from k3s_netpol.files import InputFileError, OutputError, read_text, write_file, write_if_changed


def test_writes_a_new_file_with_its_mode_and_creates_the_directory(tmp_path):
    path = tmp_path / "out" / "rules.txt"
    assert write_if_changed(path, b"first\n", mode=0o640) is True
    assert path.read_bytes() == b"first\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_leaves_an_identical_file_untouched(tmp_path):
    path = tmp_path / "rules.txt"
    write_if_changed(path, b"same\n")
    before = path.stat().st_mtime_ns, path.stat().st_ino
    assert write_if_changed(path, b"same\n") is False
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before


def test_replaces_changed_content_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "rules.txt"
    path.write_bytes(b"\xff not utf-8")
    assert write_if_changed(path, b"new\n") is True
    assert path.read_bytes() == b"new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.txt"]


def test_keeps_an_existing_files_mode_and_owner(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_bytes(b"old\n")
    path.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(path, 4242, 4343)
    assert write_if_changed(path, b"new\n") is True
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if os.geteuid() == 0:
        assert (path.stat().st_uid, path.stat().st_gid) == (4242, 4343)


def test_writes_through_a_fifo_without_replacing_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert write_if_changed(fifo, b"through\n") is True
    reader.join(10)
    assert received == [b"through\n"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_writes_through_a_character_device_also_behind_a_link(tmp_path):
    link = tmp_path / "stdout"
    link.symlink_to("/dev/null")
    write_file(link, b"discarded\n")
    assert link.is_symlink()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("kind", ["symlink", "directory", "dangling"])
def test_refuses_what_is_not_a_regular_file_and_changes_nothing(tmp_path, kind):
    target = tmp_path / "real.yaml"
    target.write_bytes(b"keep\n")
    path = tmp_path / "out.yaml"
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "nowhere")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OutputError, match=str(path)):
        write_if_changed(path, b"new\n")
    assert target.read_bytes() == b"keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert path.is_symlink() == (kind != "directory")


def test_an_unwritable_directory_is_an_output_error_naming_the_path():
    with pytest.raises(OutputError, match=r"/proc/k3s-netpol-test/out.yaml: cannot write"):
        write_file(Path("/proc/k3s-netpol-test/out.yaml"), b"x")
    with pytest.raises(OutputError, match=r"/proc/out.yaml: cannot write in /proc"):
        write_file(Path("/proc/out.yaml"), b"x")


def test_read_text_names_the_file_when_it_is_not_utf8_or_missing(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(
        InputFileError, match=r"latin1.yaml: not UTF-8 text \(byte 0xe9 at offset 9\)"
    ):
        read_text(path)
    with pytest.raises(InputFileError, match=r"missing.yaml: no such file"):
        read_text(tmp_path / "missing.yaml")
    good = tmp_path / "ok.yaml"
    good.write_text("a: 1\n")
    assert read_text(good) == "a: 1\n"
