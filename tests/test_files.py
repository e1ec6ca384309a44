import stat

from k3s_netpol.files import write_if_changed


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
