"""The catalogue of bad (and good) inputs, one row each: the command line, the files it is given,
the exit code and the words its message must hold. Every row runs the real command in a fresh
interpreter, in its own directory, and checks that it printed no traceback, that its input files
are unchanged and that nothing in the project tree changed.

Adding a case is one `row(...)` line in CASES. `{tmp}` in the command line is the case's
directory, `{data}` is tests/data; `files` are created in `{tmp}` first (bytes or text).
The exit-code policy itself (EPIPE, Ctrl-C, internal errors) has its own tests at the end.
"""

# ruff: noqa: E501
from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SKIPPED_DIRS = {".git", ".venv", ".cache", "__pycache__", ".pytest_cache", ".mypy_cache"}
SKIPPED_DIRS |= {".ruff_cache", "build", "dist"}

NOT_UTF8 = b'namespaces: [sample1]\nsample_image: "caf\xe9"\n'
LIST_KEY = b"? [a, b]\n: 1\n"
POD_X = {"namespace": "a", "name": "x", "ip": "10.0.0.1", "node": "lab"}
POD_Y = {"namespace": "b", "name": "y", "ip": "10.0.0.2", "node": "lab"}
PROBE = {"from": "a/x", "to": "b/y", "port": 80, "protocol": "TCP", "allowed": True}
LAB_JSON = json.dumps({"pods": [POD_X, POD_Y], "probes": [PROBE]})
EXPECTED_ONLY = json.dumps({"probes": [PROBE]})
OBSERVED_ONE_LINE = json.dumps({**{k: PROBE[k] for k in ("from", "to", "port")}, "connected": True})
OBSERVED_BLOCKED = OBSERVED_ONE_LINE.replace("true", "false") + "\n"
PODS_MULTI_DOC = "".join(
    f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod['name']}, namespace: "
    f"{pod['namespace']}}}\nspec: {{nodeName: lab}}\nstatus: {{podIP: {pod['ip']}}}\n"
    for pod in (POD_X, POD_Y)
)
REPORT = "report --expected {tmp}/lab.json --out {tmp}/out --observed"


@dataclass(frozen=True)
class Case:
    argv: str
    exit_code: int
    words: tuple[str, ...]
    files: Mapping[str, bytes | str] = field(default_factory=dict)
    stdin: bytes = b""
    writes: tuple[str, ...] = ()
    check: Callable[[Path], None] | None = None


def row(argv: str, exit_code: int, *words: str, **options: Any) -> Any:
    return pytest.param(Case(argv, exit_code, words, **options), id=argv)


def _mode_kept(tmp: Path) -> None:
    written = tmp / "bundle.yaml"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert written.read_text().startswith("# Rendered by")


def _link_kept(tmp: Path) -> None:
    assert (tmp / "link.yaml").is_symlink()
    assert (tmp / "real.yaml").read_text() == "keep\n"


def _device_kept(tmp: Path) -> None:
    assert (tmp / "null").is_symlink()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def _report_written(tmp: Path) -> None:
    assert json.loads((tmp / "out" / "report.json").read_text())["summary"]["probes"] == 1


# One row per line, however long: ruff format leaves the table alone.
# fmt: off
CASES = [
    # Good cases: the commands users run every day exit 0.
    row("--version", 0, "k3s-netpol"),
    row("expect -f {data}/netpol-cases/cluster.yaml -o json", 0, '"probes"'),
    row("bundle render", 0, "deny-by-default"),
    row("bundle render -o -", 0, "deny-by-default"),
    row("bundle validate {data}/logs/policies.yaml", 0, "valid"),
    row("logs {data}/logs/syslogemu.log --summary", 0, ""),
    row(f"{REPORT} {{tmp}}/o.jsonl", 0, "wrote", files={"lab.json": LAB_JSON, "o.jsonl": OBSERVED_ONE_LINE + "\n"}, writes=("out",), check=_report_written),
    row(f"{REPORT} {{tmp}}/o.jsonl", 1, "FAIL", files={"lab.json": LAB_JSON, "o.jsonl": OBSERVED_BLOCKED}, writes=("out",)),
    row("report --expected {tmp}/e.json --pods {tmp}/pods.yaml --observed {tmp}/o.json --out {tmp}/out", 0, "wrote", files={"e.json": EXPECTED_ONLY, "pods.yaml": PODS_MULTI_DOC, "o.json": OBSERVED_ONE_LINE}, writes=("out",)),
    # Outputs: a regular file keeps its mode; devices are written through; links are refused.
    row("bundle render -o {tmp}/bundle.yaml", 0, "written", files={"bundle.yaml": "old\n"}, check=_mode_kept, writes=("bundle.yaml",)),
    row("bundle render -o {tmp}/null", 0, "null: written", check=_device_kept),
    row("bundle render -o {tmp}/link.yaml", 2, "link.yaml", "symbolic link", files={"real.yaml": "keep\n"}, check=_link_kept),
    row("bundle render -o {tmp}", 2, "directory"),
    row("lab compile --builtin-workloads --node lab --out {tmp}/lab", 0, "", writes=("lab",)),
    row("lab compile --builtin-workloads --node lab --out /proc/lab", 2, "/proc/lab"),
    row("bundle render -o /proc/bundle.yaml", 2, "/proc/bundle.yaml", "cannot write"),
    row("bundle render -o /proc/no/such/bundle.yaml", 2, "/proc/no/such/bundle.yaml"),
    row(f"{REPORT} {{tmp}}/o.jsonl --out /proc/out", 2, "--out", "/proc/out", files={"lab.json": LAB_JSON, "o.jsonl": OBSERVED_ONE_LINE}),
    # Malformed, non-UTF-8 and empty inputs.
    row("bundle render -c {tmp}/c.yaml", 2, "c.yaml", "mapping key", files={"c.yaml": LIST_KEY}),
    row("bundle validate {tmp}/c.yaml", 2, "c.yaml", "mapping key", files={"c.yaml": LIST_KEY}),
    row("bundle render -c {tmp}/c.yaml", 2, "c.yaml", "not UTF-8", files={"c.yaml": NOT_UTF8}),
    row("bundle render -c -", 2, "<stdin>", "not UTF-8", stdin=NOT_UTF8),
    row("bundle validate {tmp}/c.yaml", 2, "c.yaml", "not UTF-8", files={"c.yaml": NOT_UTF8}),
    row("bundle render -c {tmp}/c.yaml", 2, "sample_replicas", "2147483647", files={"c.yaml": "sample_replicas: 2147483648\n"}),
    row("bundle render -c {tmp}/missing.yaml", 2, "missing.yaml", "no such file"),
    row("expect -f -", 2, "<stdin>", "not UTF-8", stdin=NOT_UTF8),
    row("expect -f -", 2, "no pods in input"),
    row("expect -f {tmp}/ns.yaml", 2, "ns.yaml", "no pods in input", files={"ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"}),
    row("expect -f {tmp}/c.yaml", 2, "c.yaml", files={"c.yaml": LIST_KEY}),
    row("expect -f {tmp}/missing.yaml", 2, "missing.yaml", "no such file"),
    row("verify -e @{tmp}/vars.yml", 2, "--extra-vars", "vars.yml", "not UTF-8", files={"vars.yml": NOT_UTF8}),
    row("verify -i {tmp}/missing.yml", 2, "missing.yml"),
    row("report --expected {tmp}/e.json --observed {tmp}/o.jsonl --out {tmp}/out", 2, "e.json", "not UTF-8", files={"e.json": NOT_UTF8, "o.jsonl": OBSERVED_ONE_LINE}),
    row(f"{REPORT} {{tmp}}/o.jsonl", 2, "o.jsonl", "not UTF-8", files={"lab.json": LAB_JSON, "o.jsonl": NOT_UTF8}),
    row("nosuchcommand", 2, "No such command"),
    # logs rows that pass on main (the logs branch adds its own).
    row("logs {tmp}/missing.log", 2, "missing.log"),
    row("logs", 2, "FILE"),
]
# fmt: on


def _project_snapshot() -> dict[str, tuple[int, int]]:
    snapshot = {}
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [
            name
            for name in subdirectories
            if name not in SKIPPED_DIRS and not name.endswith(".egg-info")
        ]
        for name in files:
            path = Path(directory, name)
            try:
                status = path.lstat()
            except FileNotFoundError:
                continue
            snapshot[str(path.relative_to(ROOT))] = (status.st_mtime_ns, status.st_size)
    return snapshot


def _digests(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def run_cli(argv: list[str], cwd: Path, stdin: bytes = b"", **env: str) -> Any:
    environment = {**os.environ, "K3S_NETPOL_ARTIFACTS_DIR": str(cwd / "artifacts"), **env}
    environment.pop("K3S_NETPOL_DEBUG", None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "k3s_netpol", *argv],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        env=environment,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("case", CASES)
def test_catalogue(case: Case, tmp_path: Path) -> None:
    for name, content in case.files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    if case.check is _device_kept:
        # Through a link: a broken writer replaces the link, never the machine's /dev/null.
        (tmp_path / "null").symlink_to("/dev/null")
    if "link.yaml" in case.argv:
        (tmp_path / "link.yaml").symlink_to(tmp_path / "real.yaml")
    if case.check is _mode_kept:
        (tmp_path / "bundle.yaml").chmod(0o600)
    argv = shlex.split(case.argv.format(tmp=tmp_path, data=DATA))
    inputs = {
        name: digest
        for name, digest in _digests(tmp_path).items()
        if not name.startswith(case.writes)
    }
    project = _project_snapshot()

    result = run_cli(argv, tmp_path, case.stdin)

    stdout = result.stdout.decode(errors="replace")
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == case.exit_code, f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert "Traceback" not in stderr + stdout
    for word in case.words:
        assert word in stdout + stderr, f"{word!r} not in:\n{stdout}\n{stderr}"
    after = _digests(tmp_path)
    assert {name: after.get(name) for name in inputs} == inputs, "an input file changed"
    assert _project_snapshot() == project, "a file in the project tree changed"
    if case.check is not None:
        case.check(tmp_path)


# --------------------------------------------------------------------------- the policy itself


def test_closed_stdout_exits_141_quietly(tmp_path: Path) -> None:
    """`k3s-netpol ... | head`: the reader went away before the output was written."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        process = subprocess.run(
            [sys.executable, "-m", "k3s_netpol", "bundle", "render"],
            stdout=writer,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    assert process.returncode == 141
    assert process.stderr == b""


def test_ctrl_c_exits_130_saying_the_output_is_partial(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "k3s_netpol", "expect", "-f", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    time.sleep(1.5)  # let it start and block reading standard input
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert b"interrupted" in stderr
    assert b"partial" in stderr
    assert b"Traceback" not in stderr


BUGGY_RENDER = (
    "import k3s_netpol.bundle as bundle\n"
    "def render(config):\n    raise KeyError('a bug')\n"
    "bundle.render = render\n"
    "from k3s_netpol.cli import main\n"
    "main(['bundle', 'render'])\n"
)


@pytest.mark.parametrize("debug", [False, True])
def test_an_internal_error_exits_4_with_a_short_bug_report(tmp_path: Path, debug: bool) -> None:
    environment = {**os.environ}
    environment.pop("K3S_NETPOL_DEBUG", None)
    if debug:
        environment["K3S_NETPOL_DEBUG"] = "1"
    process = subprocess.run(
        [sys.executable, "-c", BUGGY_RENDER],
        capture_output=True,
        env=environment,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    stderr = process.stderr.decode()
    assert process.returncode == 4, stderr
    assert "internal error" in stderr
    assert "KeyError: 'a bug'" in stderr
    assert "This is a bug in k3s-netpol" in stderr
    assert ("Traceback" in stderr) == debug


# --------------------------------------------------------------------------- the Python API


@pytest.mark.parametrize("as_path", [False, True])
def test_load_manifests_takes_one_path_as_one_file(tmp_path: Path, as_path: bool) -> None:
    from k3s_netpol.model import load_manifests

    manifest = tmp_path / "pod.yaml"
    manifest.write_text(PODS_MULTI_DOC)
    cluster = load_manifests(manifest if as_path else str(manifest))
    assert sorted(pod.key for pod in cluster.pods) == ["a/x", "b/y"]


AS_NOBODY = ("/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
    reason="needs root and setpriv to run the command as another user",
)
def test_an_unwritable_directory_exits_2_naming_the_file(tmp_path: Path) -> None:
    """As root every directory is writable: the command runs as nobody in a root-owned one."""
    tmp_path.chmod(0o755)
    target = tmp_path / "bundle.yaml"
    process = subprocess.run(
        [*AS_NOBODY, sys.executable, "-m", "k3s_netpol", "bundle", "render", "-o", str(target)],
        capture_output=True,
        cwd="/",
        timeout=60,
        check=False,
    )
    stderr = process.stderr.decode()
    assert process.returncode == 2, stderr
    assert f"{target}: cannot write" in stderr
    assert "Permission denied" in stderr
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []
