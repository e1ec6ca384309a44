"""run_playbook against real (small) playbooks on this machine, connection local; the unreachable
case connects over SSH to a closed port on loopback."""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from k3s_netpol import runner
from k3s_netpol.runner import (
    AnsibleNotFoundError,
    PlaybookNotFoundError,
    ProjectNotFoundError,
    RunnerInputError,
    project_root,
    resolve_playbook,
    run_playbook,
    validate_inventory_dict,
)

PLAYBOOKS = Path(__file__).parent / "data" / "playbooks"
LOCAL_HOST_VARS = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}


def local_inventory(*hosts: str) -> dict[str, Any]:
    return {"all": {"hosts": {host: dict(LOCAL_HOST_VARS) for host in hosts or ("localhost",)}}}


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make run_playbook's private data dirs land in a directory this test owns."""
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(runs))
    return runs


def test_project_root_is_the_checkout() -> None:
    root = project_root()
    assert (root / "site.yml").is_file()
    assert (root / "ansible.cfg").is_file()
    assert root == Path(runner.__file__).resolve().parents[2]


def test_project_root_override_must_be_a_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(runner.PROJECT_DIR_ENV, str(tmp_path))
    with pytest.raises(ProjectNotFoundError, match=runner.PROJECT_DIR_ENV):
        project_root()
    monkeypatch.setenv(runner.PROJECT_DIR_ENV, str(PLAYBOOKS / "project"))
    assert project_root() == (PLAYBOOKS / "project").resolve()


def test_relative_playbook_resolves_from_the_project_root() -> None:
    path = resolve_playbook("tests/data/playbooks/succeed.yml")
    assert path == (PLAYBOOKS / "succeed.yml").resolve()


def test_success_streams_events_and_counts_per_host(private_tmp: Path, tmp_path: Path) -> None:
    output = tmp_path / "greeting.txt"
    events: list[dict[str, Any]] = []
    result = run_playbook(
        PLAYBOOKS / "succeed.yml",
        inventory=local_inventory(),
        extravars={"netpol_test_greeting": "hello", "netpol_test_output": str(output)},
        on_event=events.append,
    )
    assert result.ok, result.summary()
    assert (result.status, result.rc) == ("successful", 0)
    assert output.read_text() == "hello\n"
    stats = result.stats["localhost"]
    assert (stats.ok, stats.changed, stats.failed, stats.unreachable) == (2, 1, 0, 0)
    assert result.failures == []
    kinds = [event["event"] for event in events]
    assert kinds[0] == "playbook_on_start"
    assert kinds[-1] == "playbook_on_stats"
    assert kinds.count("runner_on_ok") == 2
    task_names = [e["event_data"]["task"] for e in events if e["event"] == "playbook_on_task_start"]
    assert task_names == [
        "Report the greeting passed as an extra variable.",
        "Write the greeting to the output file the test chose.",
    ]
    assert result.private_data_dir is None
    assert list(private_tmp.iterdir()) == []


def test_failing_task_is_reported_with_its_message(private_tmp: Path) -> None:
    result = run_playbook(PLAYBOOKS / "fail.yml", inventory=local_inventory())
    assert not result.ok
    assert result.status == "failed"
    assert result.rc == 2
    assert len(result.failures) == 1
    failure = result.failures[0]
    assert failure.host == "localhost"
    assert failure.task == "Fail with a message the test looks for."
    assert failure.message == "netpol-test-failure: localhost refused on purpose"
    assert not failure.unreachable
    assert result.stats["localhost"].ok == 1
    assert result.stats["localhost"].failed == 1
    assert "refused on purpose" in result.summary()
    assert result.to_dict()["failures"][0]["message"] == failure.message


def test_unreachable_host_names_the_host_and_the_connection_error(private_tmp: Path) -> None:
    inventory = {
        "all": {
            "hosts": {
                "closed-port": {
                    "ansible_connection": "ssh",
                    "ansible_host": "127.0.0.1",
                    "ansible_port": 1,
                    "ansible_ssh_common_args": "-o ConnectTimeout=5 -o BatchMode=yes",
                }
            }
        }
    }
    result = run_playbook(PLAYBOOKS / "ping.yml", inventory=inventory)
    assert not result.ok
    assert result.rc == 4
    assert result.stats["closed-port"].unreachable == 1
    [failure] = result.failures
    assert failure.unreachable
    assert failure.host == "closed-port"
    assert "port 1" in failure.message
    assert "Connection refused" in failure.message
    assert failure.describe().startswith("closed-port: unreachable at task ")


def test_check_mode_changes_nothing(private_tmp: Path, tmp_path: Path) -> None:
    output = tmp_path / "never-written.txt"
    result = run_playbook(
        PLAYBOOKS / "succeed.yml",
        inventory=local_inventory(),
        extravars={"netpol_test_output": str(output)},
        check=True,
        diff=True,
    )
    assert result.ok, result.summary()
    assert result.stats["localhost"].changed == 1
    assert not output.exists()


def test_inventory_file_tags_and_limit(private_tmp: Path, tmp_path: Path) -> None:
    inventory_file = tmp_path / "hosts.yml"
    inventory_file.write_text(yaml.safe_dump(local_inventory("first", "second")))
    result = run_playbook(
        PLAYBOOKS / "succeed.yml",
        inventory=inventory_file,
        tags=["netpol_test_tagged"],
        limit="second",
    )
    assert result.ok, result.summary()
    assert set(result.stats) == {"second"}
    assert result.stats["second"].ok == 1


def test_skip_tags_skip_the_tagged_tasks(private_tmp: Path) -> None:
    result = run_playbook(
        PLAYBOOKS / "succeed.yml", inventory=local_inventory(), skip_tags="netpol_test_skippable"
    )
    assert result.ok, result.summary()
    assert result.stats["localhost"].ok == 0
    assert result.stats["localhost"].skipped == 1


def test_private_data_dir_is_kept_when_asked(private_tmp: Path) -> None:
    result = run_playbook(
        PLAYBOOKS / "ping.yml", inventory=local_inventory(), keep_private_data_dir=True
    )
    assert result.ok, result.summary()
    assert result.private_data_dir is not None
    kept = Path(result.private_data_dir)
    assert kept.parent == private_tmp
    assert list(kept.glob("artifacts/*/job_events/*.json"))
    assert (kept / "inventory" / "hosts.json").stat().st_mode & 0o777 == 0o600


def test_failed_run_without_task_keeps_the_output_tail(private_tmp: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("- name: Broken\n  hosts: all\n  tasks:\n    - no_such_module_here: {}\n")
    result = run_playbook(broken, inventory=local_inventory())
    assert not result.ok
    assert result.failures == []
    assert "no_such_module_here" in result.output_tail
    assert "no_such_module_here" in result.summary()


@pytest.mark.parametrize(
    ("inventory", "field"),
    [
        ({}, "inventory: must be a non-empty mapping"),
        ({"all": ["localhost"]}, "inventory.all: a group must be a mapping"),
        ({"all": {"host": {}}}, "inventory.all: unknown key(s) host"),
        ({"all": {"hosts": ["localhost"]}}, "inventory.all.hosts: must be a mapping"),
        ({"all": {"hosts": {"web1": ["x"]}}}, "inventory.all.hosts.web1: must be a mapping"),
        ({"all": {"vars": "x=1"}}, "inventory.all.vars: must be a mapping"),
        (
            {"all": {"children": {"server": {"hosts": {"s1": None}, "vars": [1]}}}},
            "inventory.all.children.server.vars: must be a mapping",
        ),
        ({"all": {"hosts": {"": None}}}, "inventory.all.hosts key: must be a non-empty string"),
    ],
)
def test_malformed_inventory_dict_names_the_field(inventory: Any, field: str) -> None:
    with pytest.raises(RunnerInputError) as raised:
        validate_inventory_dict(inventory)
    assert field in str(raised.value)


def test_valid_nested_inventory_dict_passes() -> None:
    validate_inventory_dict(
        {
            "k3s_cluster": {
                "children": {"server": {"hosts": {"s1": None}}, "agent": {"hosts": {"a1": {}}}},
                "vars": {"k3s_version": "v1.31.4+k3s1"},
            }
        }
    )


@pytest.fixture
def runner_must_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**_kwargs: Any) -> None:
        raise AssertionError("ansible_runner.run was called despite bad input")

    monkeypatch.setattr(runner.ansible_runner, "run", refuse)


@pytest.mark.usefixtures("runner_must_not_start")
@pytest.mark.parametrize(
    ("kwargs", "error_type", "message"),
    [
        ({"playbook": "playbooks/no-such.yml"}, PlaybookNotFoundError, "playbooks/no-such.yml"),
        (
            {"inventory": "/nonexistent/hosts.yml"},
            RunnerInputError,
            "inventory /nonexistent/hosts.yml: no such file",
        ),
        ({"inventory": {"all": {"hosts": "x"}}}, RunnerInputError, "inventory.all.hosts"),
        ({"extravars": {"not a name": 1}}, RunnerInputError, "'not a name'"),
        ({"extravars": {"when": object()}}, RunnerInputError, "extravars: not serialisable"),
        ({"tags": ["ok", ""]}, RunnerInputError, "tags: must be a non-empty string"),
        ({"verbosity": 9}, RunnerInputError, "verbosity"),
        ({"verbosity": "2"}, RunnerInputError, "verbosity: must be an integer from 0 to 6"),
        ({"verbosity": True}, RunnerInputError, "verbosity: must be an integer"),
        ({"inventory": 42}, RunnerInputError, "inventory: must be a path"),
        ({"inventory": ["hosts.yml"]}, RunnerInputError, "got list"),
        ({"timeout": 0}, RunnerInputError, "timeout: must be a number of seconds above 0"),
        ({"timeout": -5}, RunnerInputError, "timeout: must be a number"),
        ({"timeout": "10"}, RunnerInputError, "timeout: must be a number"),
        ({"cancel": "yes"}, RunnerInputError, "cancel: must be a threading.Event or a callable"),
    ],
)
def test_bad_input_fails_before_anything_runs(
    kwargs: dict[str, Any], error_type: type[Exception], message: str, private_tmp: Path
) -> None:
    arguments: dict[str, Any] = {"playbook": PLAYBOOKS / "ping.yml", **kwargs}
    playbook = arguments.pop("playbook")
    with pytest.raises(error_type) as raised:
        run_playbook(playbook, **arguments)
    assert message in str(raised.value)
    assert list(private_tmp.iterdir()) == []


def test_missing_ansible_is_named_before_anything_runs(
    private_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare_bin = tmp_path / "bin"
    bare_bin.mkdir()
    monkeypatch.setattr(sys, "executable", str(bare_bin / "python3"))
    monkeypatch.setenv("PATH", str(bare_bin))
    with pytest.raises(AnsibleNotFoundError, match=r"k3s-netpol\[ansible\]"):
        run_playbook(PLAYBOOKS / "ping.yml", inventory=local_inventory())
    assert list(private_tmp.iterdir()) == []


def _processes_with(text: str) -> list[int]:
    """Live (not zombie) processes whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text.encode() in command and state != "Z":
            found.append(int(entry))
    return found


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", ["timeout", "event", "callable"])
def test_a_stopped_run_leaves_no_process_and_no_directory(private_tmp: Path, how: str) -> None:
    """The sleep runs in an Ansible worker, which makes a session of its own: killing
    ansible-playbook's process group alone would leave it (and its sleep) running."""
    seconds = f"{random.randint(1000, 9999)}.{random.randint(100, 999)}"
    started = threading.Event()
    groups: list[int] = []

    def on_event(event: Any) -> None:
        pid = event.get("pid")
        if isinstance(pid, int) and not groups:
            groups.append(os.getpgid(pid))
        if event.get("event") == "runner_on_start":
            started.set()

    def sleep_is_running() -> bool:
        return started.is_set() and bool(_processes_with(f"sleep {seconds}"))

    controls: dict[str, Any] = {
        "timeout": {"timeout": 4},
        "event": {"cancel": started},
        "callable": {"cancel": sleep_is_running},
    }[how]
    began = time.monotonic()
    result = run_playbook(
        PLAYBOOKS / "sleep.yml",
        inventory=local_inventory(),
        extravars={"netpol_test_sleep": seconds},
        on_event=on_event,
        **controls,
    )
    assert time.monotonic() - began < 30
    assert result.status == ("timeout" if how == "timeout" else "canceled")
    assert not result.ok
    assert groups, "no event carried ansible-playbook's pid"
    assert not _group_alive(groups[0])
    assert _processes_with(f"sleep {seconds}") == []
    assert _processes_with(str(PLAYBOOKS / "sleep.yml")) == []
    assert list(private_tmp.iterdir()) == []


def test_a_run_within_its_timeout_is_not_stopped(private_tmp: Path) -> None:
    result = run_playbook(
        PLAYBOOKS / "sleep.yml",
        inventory=local_inventory(),
        extravars={"netpol_test_sleep": "0.1"},
        timeout=60,
        cancel=threading.Event(),
    )
    assert result.ok, result.summary()
    assert result.status == "successful"


@pytest.mark.parametrize("exception", [RuntimeError, KeyboardInterrupt])
def test_an_exception_during_the_run_stops_it_before_propagating(
    private_tmp: Path, exception: type[BaseException]
) -> None:
    """Ctrl-C reaches only this process (ansible-playbook has a session of its own), as a
    KeyboardInterrupt here; it and an on_event error must not leave the run behind."""
    seconds = f"{random.randint(1000, 9999)}.{random.randint(100, 999)}"

    def on_event(event: Any) -> None:
        if event.get("event") == "runner_on_start":
            deadline = time.monotonic() + 10
            while not _processes_with(f"sleep {seconds}") and time.monotonic() < deadline:
                time.sleep(0.05)
            raise exception("stop here")

    try:
        run_playbook(
            PLAYBOOKS / "sleep.yml",
            inventory=local_inventory(),
            extravars={"netpol_test_sleep": seconds},
            on_event=on_event,
        )
    except exception:
        # Checked while the traceback (and with it ansible-runner's pexpect child) is alive, as
        # for a caller handling the error: its garbage collection must not be what stops the run.
        leftovers = _processes_with(f"sleep {seconds}")
    else:
        pytest.fail("run_playbook did not raise")
    assert leftovers == []
    assert list(private_tmp.iterdir()) == []
