"""Run the project's playbooks through ansible-runner's Python API and return a typed result.

`run_playbook` is the one entry point. It validates its input before anything runs, stages a
private data directory under a temporary directory (removed afterwards unless asked to keep it),
runs ansible-playbook with the project's ansible.cfg and roles, streams every event to an
optional callback, and returns a `RunResult`: status, return code, per-host stats and the failed
tasks with their messages (for an unreachable host, the connection error).

The project root (where site.yml, playbooks/, roles/, inventory/ and ansible.cfg live) is found in
this order: the `K3S_NETPOL_PROJECT_DIR` environment variable; the checkout this module sits in
(`src/k3s_netpol/runner.py` -> two directories up); the copy shipped inside the installed package
(`k3s_netpol/data/project`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner  # type: ignore[import-untyped]

PROJECT_DIR_ENV = "K3S_NETPOL_PROJECT_DIR"
ARTIFACTS_DIR_ENV = "K3S_NETPOL_ARTIFACTS_DIR"
_PROJECT_MARKERS = ("site.yml", "ansible.cfg")
_INVENTORY_GROUP_KEYS = frozenset({"hosts", "vars", "children"})

RUN_MARKER_ENV = "K3S_NETPOL_RUN_DIR"
# How often ansible-runner wakes up to ask whether to cancel (its default is 5 s).
_CANCEL_POLL_SECONDS = 0.2
# How long killing a run's processes may take before run_playbook says so.
_KILL_GRACE_SECONDS = 10.0

EventCallback = Callable[[Mapping[str, Any]], None]
CancelRequest = Callable[[], bool] | threading.Event


class RunnerInputError(ValueError):
    """Bad input to `run_playbook`, raised before anything runs; the message names the file or
    the field."""


class PlaybookNotFoundError(RunnerInputError):
    """The playbook file does not exist."""


class AnsibleNotFoundError(RunnerInputError):
    """No ansible-playbook to run: Ansible is not installed beside the package."""


class ProjectNotFoundError(RunnerInputError):
    """Neither the environment, the checkout nor the installed package holds the project."""


class RunNotStoppedError(RuntimeError):
    """A timed-out or cancelled run left processes that SIGKILL did not end in time."""


@dataclass(frozen=True)
class HostStats:
    """The PLAY RECAP counters of one host."""

    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def healthy(self) -> bool:
        return self.failed == 0 and self.unreachable == 0


@dataclass(frozen=True)
class TaskFailure:
    """One task that failed on one host, or one host that could not be reached."""

    host: str
    task: str
    message: str
    unreachable: bool = False
    play: str | None = None
    task_path: str | None = None

    def describe(self) -> str:
        what = "unreachable" if self.unreachable else "failed"
        return f"{self.host}: {what} at task {self.task!r}: {self.message}"


@dataclass
class RunResult:
    """What one playbook run did. `status` is ansible-runner's: successful, failed, timeout,
    canceled; `rc` is ansible-playbook's return code."""

    playbook: str
    status: str
    rc: int
    stats: dict[str, HostStats] = field(default_factory=dict)
    failures: list[TaskFailure] = field(default_factory=list)
    output_tail: str = ""
    private_data_dir: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def summary(self) -> str:
        """One line per problem, or a short success line: what a user should read first."""
        if self.ok:
            return f"{self.playbook}: ok ({len(self.stats)} host(s))"
        lines = [f"{self.playbook}: {self.status} (rc={self.rc})"]
        lines.extend(f"  {failure.describe()}" for failure in self.failures)
        if not self.failures and self.output_tail:
            lines.append("  " + self.output_tail.strip().replace("\n", "\n  "))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook,
            "ok": self.ok,
            "status": self.status,
            "rc": self.rc,
            "stats": {host: asdict(stats) for host, stats in sorted(self.stats.items())},
            "failures": [asdict(failure) for failure in self.failures],
            "output_tail": self.output_tail,
            "private_data_dir": self.private_data_dir,
        }


def _looks_like_project(directory: Path) -> bool:
    return all((directory / marker).is_file() for marker in _PROJECT_MARKERS)


def project_root() -> Path:
    """The directory holding site.yml, playbooks/, roles/ and ansible.cfg."""
    override = os.environ.get(PROJECT_DIR_ENV)
    if override:
        directory = Path(override).expanduser().resolve()
        if not _looks_like_project(directory):
            raise ProjectNotFoundError(
                f"{PROJECT_DIR_ENV}={override}: no site.yml and ansible.cfg there; "
                "point it at a k3s-netpol checkout or unset it"
            )
        return directory
    checkout = Path(__file__).resolve().parents[2]
    if _looks_like_project(checkout):
        return checkout
    packaged = Path(__file__).resolve().parent / "data" / "project"
    if _looks_like_project(packaged):
        return packaged
    raise ProjectNotFoundError(
        f"cannot find the k3s-netpol playbooks: not in the checkout {checkout} nor in the "
        f"package ({packaged}); set {PROJECT_DIR_ENV} to a k3s-netpol checkout"
    )


def default_artifacts_dir() -> Path:
    """Where controller-side files go unless told otherwise: `$K3S_NETPOL_ARTIFACTS_DIR`, else
    `<project>/artifacts` in a checkout (what a bare `ansible-playbook site.yml` uses), else
    `./artifacts` under the current directory (an installed package is not writable)."""
    override = os.environ.get(ARTIFACTS_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    try:
        root = project_root()
    except ProjectNotFoundError:
        return Path.cwd() / "artifacts"
    if root == Path(__file__).resolve().parents[2] and os.access(root, os.W_OK):
        return root / "artifacts"
    return Path.cwd() / "artifacts"


def resolve_playbook(playbook: str | os.PathLike[str], root: Path | None = None) -> Path:
    """An absolute path to an existing playbook; relative paths are taken from the project root."""
    path = Path(playbook).expanduser()
    if not path.is_absolute():
        path = (root or project_root()) / path
    if not path.is_file():
        raise PlaybookNotFoundError(f"playbook {path}: no such file")
    return path.resolve()


def _check_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RunnerInputError(f"{where}: must be a non-empty string, got {value!r}")
    return value


def _check_vars(value: object, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise RunnerInputError(
            f"{where}: must be a mapping of variables, got {type(value).__name__}"
        )
    for key in value:
        _check_name(key, f"{where} key")


def validate_inventory_dict(inventory: Mapping[str, Any]) -> None:
    """Check a YAML/JSON-style inventory dict (`{group: {hosts, vars, children}}`); raise
    `RunnerInputError` naming the first bad field, e.g. `inventory.all.hosts.web1.vars: ...`."""
    if not isinstance(inventory, Mapping) or not inventory:
        raise RunnerInputError("inventory: must be a non-empty mapping of group names to groups")

    def check_group(name: object, group: object, where: str) -> None:
        _check_name(name, where)
        if group is None:
            return
        if not isinstance(group, Mapping):
            raise RunnerInputError(
                f"{where}: a group must be a mapping with hosts/vars/children, "
                f"got {type(group).__name__}"
            )
        unknown = sorted(str(key) for key in group if key not in _INVENTORY_GROUP_KEYS)
        if unknown:
            raise RunnerInputError(
                f"{where}: unknown key(s) {', '.join(unknown)}; a group has hosts, vars, children"
            )
        hosts = group.get("hosts")
        if hosts is not None:
            if not isinstance(hosts, Mapping):
                raise RunnerInputError(
                    f"{where}.hosts: must be a mapping of host names to their variables, "
                    f"got {type(hosts).__name__}"
                )
            for host, host_vars in hosts.items():
                _check_name(host, f"{where}.hosts key")
                _check_vars(host_vars, f"{where}.hosts.{host}")
        _check_vars(group.get("vars"), f"{where}.vars")
        children = group.get("children")
        if children is not None:
            if not isinstance(children, Mapping):
                raise RunnerInputError(
                    f"{where}.children: must be a mapping of group names to groups, "
                    f"got {type(children).__name__}"
                )
            for child, child_group in children.items():
                check_group(child, child_group, f"{where}.children.{child}")

    for group_name, group in inventory.items():
        check_group(group_name, group, f"inventory.{group_name}")
    try:
        json.dumps(inventory)
    except (TypeError, ValueError) as error:
        raise RunnerInputError(f"inventory: not serialisable as JSON: {error}") from error


def _validate_extravars(extravars: Mapping[str, Any]) -> None:
    if not isinstance(extravars, Mapping):
        raise RunnerInputError(f"extravars: must be a mapping, got {type(extravars).__name__}")
    for key in extravars:
        if not isinstance(key, str) or not key.isidentifier():
            raise RunnerInputError(f"extravars: {key!r} is not a valid Ansible variable name")
    try:
        json.dumps(extravars)
    except (TypeError, ValueError) as error:
        raise RunnerInputError(f"extravars: not serialisable as JSON: {error}") from error


def _join_tags(tags: str | Sequence[str] | None, where: str) -> str | None:
    if tags is None:
        return None
    items = [tags] if isinstance(tags, str) else list(tags)
    for item in items:
        _check_name(item, where)
    return ",".join(item.strip() for item in items) or None


def _result_message(result: Mapping[str, Any]) -> str:
    """The most useful text in a failed task's result."""
    parts: list[str] = []
    message = result.get("msg")
    if message:
        parts.append(str(message).strip())
    stderr = result.get("stderr") or result.get("module_stderr")
    if stderr and str(stderr).strip() not in parts:
        parts.append(str(stderr).strip())
    if not parts and result.get("rc") is not None:
        parts.append(f"exited with rc={result['rc']}")
    items = result.get("results")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping) and item.get("failed"):
                label = item.get("item")
                parts.append(f"item {label!r}: {_result_message(item)}")
    if not parts and result.get("exception"):
        parts.append(str(result["exception"]).strip().splitlines()[-1])
    return "\n".join(parts) if parts else "failed without a message"


def _failure_from_event(event: Mapping[str, Any]) -> TaskFailure | None:
    kind = event.get("event")
    data = event.get("event_data") or {}
    if kind not in ("runner_on_failed", "runner_on_unreachable"):
        return None
    if kind == "runner_on_failed" and data.get("ignore_errors"):
        return None
    result = data.get("res") or {}
    return TaskFailure(
        host=str(data.get("host") or data.get("remote_addr") or "?"),
        task=str(data.get("task") or data.get("task_action") or "?"),
        message=_result_message(result) if isinstance(result, Mapping) else str(result),
        unreachable=kind == "runner_on_unreachable",
        play=data.get("play"),
        task_path=data.get("task_path"),
    )


_STATS_KEYS = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "dark": "unreachable",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}


def _stats_from_event(data: Mapping[str, Any]) -> dict[str, HostStats]:
    counts: dict[str, dict[str, int]] = {}
    for source_key, field_name in _STATS_KEYS.items():
        per_host = data.get(source_key) or {}
        for host, count in per_host.items():
            counts.setdefault(str(host), {})[field_name] = int(count)
    for host in data.get("processed") or {}:
        counts.setdefault(str(host), {})
    return {host: HostStats(**values) for host, values in counts.items()}


def _output_tail(private_data_dir: Path, lines: int = 20) -> str:
    for stdout in sorted(private_data_dir.glob("artifacts/*/stdout")):
        text = stdout.read_text(errors="replace")
        return "\n".join(text.rstrip().splitlines()[-lines:])
    return ""


def _run_processes(marker: bytes) -> list[int]:
    """The live processes whose environment holds ``marker``: every process of one run, whatever
    session or process group it made for itself (Ansible's workers call setsid)."""
    pids: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as stream:
                environment = stream.read()
        except OSError:
            continue
        if marker in environment.split(b"\0"):
            pids.append(int(entry))
    return pids


def _stop_run(marker: bytes, group: int | None) -> None:
    """SIGKILL every process of the run (its ansible-playbook process group first), again
    until none is left (a dead process's environment reads empty), or fail after a grace time."""
    if group is not None:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    deadline = time.monotonic() + _KILL_GRACE_SECONDS
    while pids := _run_processes(marker):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RunNotStoppedError(
                f"processes {', '.join(map(str, pids))} of the stopped run are still alive after "
                f"{_KILL_GRACE_SECONDS:.0f} s of SIGKILL"
            )
        time.sleep(0.02)


def _check_run_controls(timeout: object, cancel: object, verbosity: object) -> None:
    if timeout is not None and (
        not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0
    ):
        raise RunnerInputError(
            f"timeout: must be a number of seconds above 0 (None: no timeout), got {timeout!r}"
        )
    if cancel is not None and not isinstance(cancel, threading.Event) and not callable(cancel):
        raise RunnerInputError(
            f"cancel: must be a threading.Event or a callable returning True to cancel, "
            f"got {type(cancel).__name__}"
        )
    if not isinstance(verbosity, int) or isinstance(verbosity, bool) or not 0 <= verbosity <= 6:
        raise RunnerInputError(f"verbosity: must be an integer from 0 to 6, got {verbosity!r}")


def run_playbook(
    playbook: str | os.PathLike[str],
    *,
    inventory: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    extravars: Mapping[str, Any] | None = None,
    tags: str | Sequence[str] | None = None,
    skip_tags: str | Sequence[str] | None = None,
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    on_event: EventCallback | None = None,
    envvars: Mapping[str, str] | None = None,
    keep_private_data_dir: bool = False,
    quiet: bool = True,
    timeout: float | None = None,
    cancel: CancelRequest | None = None,
) -> RunResult:
    """Run one playbook with ansible-runner and return what happened.

    `playbook` is relative to the project root or absolute. `inventory` is a path (file or
    directory) or an inventory dict; None uses ansible.cfg's default (the lab). `on_event`
    receives each ansible-runner event dict (`event`, `event_data`, `stdout`, ...) as it arrives.
    `quiet=False` also prints Ansible's own output. Raises `RunnerInputError` naming the file or
    field for bad input, before anything runs.

    `timeout` (seconds above 0; None, the default, waits for ever) and `cancel` (a
    threading.Event, or a callable returning True to stop, checked about five times a second,
    like ansible-runner's cancel_callback) stop the run: every process of it is killed
    (ansible-playbook's process group and the workers that made sessions of their own), waited
    for, and only then is the private directory removed; the result's status is then "timeout"
    or "canceled". An exception in `on_event` or a KeyboardInterrupt stops the run the same way
    before it propagates. `RunNotStoppedError` if processes outlive SIGKILL for 10 s.
    """
    _check_run_controls(timeout, cancel, verbosity)
    if inventory is not None and not isinstance(inventory, (str, os.PathLike, Mapping)):
        raise RunnerInputError(
            "inventory: must be a path (str or os.PathLike) or an inventory mapping, "
            f"got {type(inventory).__name__}"
        )
    root = project_root()
    playbook_path = resolve_playbook(playbook, root)
    inventory_path: Path | None = None
    if isinstance(inventory, Mapping):
        validate_inventory_dict(inventory)
    elif inventory is not None:
        inventory_path = Path(inventory).expanduser().resolve()
        if not inventory_path.exists():
            raise RunnerInputError(f"inventory {inventory_path}: no such file or directory")
    if extravars is not None:
        _validate_extravars(extravars)
    joined_tags = _join_tags(tags, "tags")
    joined_skip_tags = _join_tags(skip_tags, "skip_tags")
    if limit is not None:
        _check_name(limit, "limit")
    for key, value in (envvars or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise RunnerInputError(f"envvars: {key!r} must map a string to a string")
    # ansible-runner takes its PATH from os.environ; put this interpreter's bin directory
    # first so the ansible-playbook that matches it (same venv) is the one run.
    search_path = os.pathsep.join(
        [
            str(Path(sys.executable).parent),
            (envvars or {}).get("PATH", os.environ.get("PATH", os.defpath)),
        ]
    )
    if shutil.which("ansible-playbook", path=search_path) is None:
        raise AnsibleNotFoundError(
            "ansible-playbook: not found beside this Python or on PATH; install Ansible into "
            "the same environment: pip install 'k3s-netpol[ansible]' (or pip install ansible)"
        )

    private_data_dir = Path(tempfile.mkdtemp(prefix="k3s-netpol-run-"))
    try:
        if isinstance(inventory, Mapping):
            inventory_dir = private_data_dir / "inventory"
            inventory_dir.mkdir(mode=0o700)
            inventory_path = inventory_dir / "hosts.json"
            inventory_path.write_text(json.dumps(inventory, indent=2))
            inventory_path.chmod(0o600)

        environment = {
            "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(root / "roles"),
            **(envvars or {}),
            "PATH": search_path,
        }
        marker = f"{RUN_MARKER_ENV}={private_data_dir}"
        environment[RUN_MARKER_ENV] = str(private_data_dir)
        settings_dir = private_data_dir / "env"
        settings_dir.mkdir(mode=0o700)
        (settings_dir / "settings").write_text(
            json.dumps({"pexpect_timeout": _CANCEL_POLL_SECONDS})
        )
        cmdline = " ".join(
            flag for flag, wanted in (("--check", check), ("--diff", diff)) if wanted
        )

        stats: dict[str, HostStats] = {}
        failures: list[TaskFailure] = []

        playbook_group: list[int] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        stopped: list[str] = []
        not_stopped: list[RunNotStoppedError] = []

        def stop_requested() -> bool:
            if stopped:
                return True
            if isinstance(cancel, threading.Event):
                cancelled = cancel.is_set()
            else:
                cancelled = cancel is not None and bool(cancel())
            if cancelled or (deadline is not None and time.monotonic() > deadline):
                stopped.append("canceled" if cancelled else "timeout")
                try:
                    _stop_run(marker.encode(), playbook_group[0] if playbook_group else None)
                except RunNotStoppedError as error:
                    # ansible-runner would wrap it in its CallbackError: raised below instead.
                    not_stopped.append(error)
                return True
            return False

        def handle_event(event: Mapping[str, Any]) -> bool:
            pid = event.get("pid")
            if not playbook_group and isinstance(pid, int):
                with contextlib.suppress(OSError):
                    playbook_group.append(os.getpgid(pid))
            failure = _failure_from_event(event)
            if failure is not None:
                failures.append(failure)
            if event.get("event") == "playbook_on_stats":
                stats.update(_stats_from_event(event.get("event_data") or {}))
            if on_event is not None:
                on_event(event)
            return True

        runner_kwargs: dict[str, Any] = {
            "private_data_dir": str(private_data_dir),
            "project_dir": str(root),
            "playbook": str(playbook_path),
            "envvars": environment,
            "event_handler": handle_event,
            "cancel_callback": stop_requested,
            "quiet": quiet,
            "json_mode": False,
        }
        if inventory_path is not None:
            runner_kwargs["inventory"] = str(inventory_path)
        if extravars:
            runner_kwargs["extravars"] = dict(extravars)
        if joined_tags:
            runner_kwargs["tags"] = joined_tags
        if joined_skip_tags:
            runner_kwargs["skip_tags"] = joined_skip_tags
        if limit:
            runner_kwargs["limit"] = limit
        if verbosity:
            runner_kwargs["verbosity"] = verbosity
        if cmdline:
            runner_kwargs["cmdline"] = cmdline
        try:
            runner = ansible_runner.run(**runner_kwargs)
        except BaseException:
            _stop_run(marker.encode(), playbook_group[0] if playbook_group else None)
            raise
        if not_stopped:
            raise not_stopped[0]
        status = stopped[0] if stopped else str(runner.status)
        rc = int(runner.rc) if runner.rc is not None else -1
        return RunResult(
            playbook=str(playbook_path),
            status=status,
            rc=rc,
            stats=stats,
            failures=failures,
            output_tail="" if status == "successful" else _output_tail(private_data_dir),
            private_data_dir=str(private_data_dir) if keep_private_data_dir else None,
        )
    finally:
        if not keep_private_data_dir:
            shutil.rmtree(private_data_dir, ignore_errors=True)
