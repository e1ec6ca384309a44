"""`k3s-netpol provision | apply | verify | reset` through click's CliRunner, against the miniature
project in tests/data/playbooks/project (real playbooks, connection local)."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from rich.console import Console

from k3s_netpol.cli import main
from k3s_netpol.cli._common import ExitCode, RunProgress, parse_extra_vars
from k3s_netpol.runner import ARTIFACTS_DIR_ENV, PROJECT_DIR_ENV, run_playbook

TEST_PROJECT = Path(__file__).parent / "data" / "playbooks" / "project"


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "artifacts"
    directory.mkdir()
    monkeypatch.setenv(PROJECT_DIR_ENV, str(TEST_PROJECT))
    monkeypatch.setenv(ARTIFACTS_DIR_ENV, str(directory))
    return directory


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def ran(artifacts: Path) -> list[str]:
    markers = sorted(artifacts.glob("ran-*"), key=lambda path: path.stat().st_mtime_ns)
    return [marker.name.removeprefix("ran-") for marker in markers]


def test_verify_ok_exits_0_and_prints_json(artifacts: Path) -> None:
    result = invoke("verify", "--json")
    assert result.exit_code == ExitCode.OK, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"command", "ok", "exit_code", "runs", "report", "report_path"}
    assert document["command"] == "verify"
    assert document["ok"] is True
    assert document["exit_code"] == 0
    assert document["report_path"] == str(artifacts / "report.json")
    assert document["report"]["ok"] is True
    [run] = document["runs"]
    assert run["playbook"] == str(TEST_PROJECT / "playbooks" / "verify.yml")
    assert run["status"] == "successful"
    assert run["rc"] == 0
    assert run["stats"]["localhost"]["ok"] == 2
    assert run["failures"] == []


def test_verify_mismatch_exits_1(artifacts: Path) -> None:
    result = invoke("verify", "-e", "netpol_test_report_ok=false")
    assert result.exit_code == ExitCode.MISMATCH, result.output
    assert "MISMATCH" in result.stderr
    assert '"to": "b/server"' in result.stderr


def test_verify_without_a_fresh_report_exits_3(artifacts: Path) -> None:
    stale = artifacts / "report.json"
    stale.write_text('{"ok": true}')
    os.utime(stale, (1_000_000, 1_000_000))
    result = invoke("verify", "-e", "netpol_test_write_report=false")
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert "predates this run" in result.stderr
    stale.unlink()
    result = invoke("verify", "-e", "netpol_test_write_report=false")
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert "wrote no report" in result.stderr


def test_verify_reads_the_report_from_netpol_artifacts_dir(artifacts: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = invoke(
        "verify", "--artifacts-dir", str(elsewhere), "-e", "netpol_test_report_ok=false", "--json"
    )
    assert result.exit_code == ExitCode.MISMATCH, result.output
    assert json.loads(result.stdout)["report_path"] == str(elsewhere / "report.json")
    assert not (artifacts / "report.json").exists()


def test_failed_run_exits_3_with_the_task_message(artifacts: Path) -> None:
    result = invoke("verify", "--json", "-e", "netpol_test_fail_in=verify")
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert document["exit_code"] == 3
    assert document["report"] is None
    [failure] = document["runs"][0]["failures"]
    assert failure["host"] == "localhost"
    assert failure["message"] == "netpol-test: verify failed on purpose"
    assert "verify failed on purpose" in result.stderr
    assert "run failed" in result.stderr


def test_unreachable_host_exits_3_naming_the_host(artifacts: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "node-behind-closed-port": {
                            "ansible_host": "127.0.0.1",
                            "ansible_port": 1,
                            "ansible_connection": "ssh",
                            "ansible_ssh_common_args": "-o ConnectTimeout=5 -o BatchMode=yes",
                        }
                    }
                }
            }
        )
    )
    result = invoke("apply", "-i", str(inventory))
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert "node-behind-closed-port: unreachable at task" in result.stderr
    assert "Connection refused" in result.stderr
    assert "check that node-behind-closed-port is up" in result.stderr


def test_provision_runs_k3s_then_ulogd(artifacts: Path) -> None:
    result = invoke("provision")
    assert result.exit_code == ExitCode.OK, result.output
    assert ran(artifacts) == ["k3s", "ulogd"]


def test_provision_stops_at_the_first_failed_playbook(artifacts: Path) -> None:
    result = invoke("provision", "--json", "-e", "netpol_test_fail_in=k3s")
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert ran(artifacts) == []
    assert len(json.loads(result.stdout)["runs"]) == 1


def test_provision_all_runs_site_and_checks_the_report(artifacts: Path) -> None:
    result = invoke("provision", "--all", "-e", "netpol_test_report_ok=false")
    assert result.exit_code == ExitCode.MISMATCH, result.output
    assert ran(artifacts) == ["k3s", "ulogd", "policies"]


def test_check_mode_changes_nothing(artifacts: Path) -> None:
    result = invoke("apply", "--check", "--diff", "--json")
    assert result.exit_code == ExitCode.OK, result.output
    assert ran(artifacts) == []
    assert json.loads(result.stdout)["runs"][0]["stats"]["localhost"]["changed"] == 1


def test_limit_and_inventory_file(artifacts: Path, tmp_path: Path) -> None:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"one": local, "two": local}}}))
    result = invoke("apply", "-i", str(inventory), "--limit", "two", "--json")
    assert result.exit_code == ExitCode.OK, result.output
    assert set(json.loads(result.stdout)["runs"][0]["stats"]) == {"two"}
    assert (artifacts / "ran-policies").read_text() == "two\n"


def test_reset_asks_and_does_nothing_without_an_answer(artifacts: Path) -> None:
    result = invoke("reset")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "--yes" in result.stderr
    result = invoke("reset", input="n\n")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "nothing was changed" in result.stderr
    assert ran(artifacts) == []


def test_reset_runs_when_confirmed(artifacts: Path) -> None:
    assert invoke("reset", input="y\n").exit_code == ExitCode.OK
    assert ran(artifacts) == ["reset"]
    (artifacts / "ran-reset").unlink()
    assert invoke("reset", "--yes").exit_code == ExitCode.OK
    assert ran(artifacts) == ["reset"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify", "-i", "/nonexistent/hosts.yml"], "inventory /nonexistent/hosts.yml"),
        (["verify", "-e", "novalue"], "--extra-vars 'novalue': expected key=value"),
        (["verify", "-e", "@/nonexistent/vars.yml"], "--extra-vars @/nonexistent/vars.yml"),
        (["verify", "--tags", ""], "tags: must be a non-empty string"),
        (["verify", "--bogus"], "No such option"),
    ],
)
def test_usage_errors_exit_2(artifacts: Path, args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.stderr
    assert ran(artifacts) == []


def test_missing_project_playbook_exits_3_and_says_what_to_do(
    artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    for name in ("site.yml", "ansible.cfg"):
        (incomplete / name).write_text((TEST_PROJECT / name).read_text())
    monkeypatch.setenv(PROJECT_DIR_ENV, str(incomplete))
    result = invoke("verify")
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert f"playbook {incomplete}/playbooks/verify.yml: no such file" in result.stderr
    assert PROJECT_DIR_ENV in result.stderr


def test_help_has_examples() -> None:
    for command in ("provision", "apply", "verify", "reset"):
        result = invoke(command, "--help")
        assert result.exit_code == 0
        assert "Examples:" in result.output
        assert f"k3s-netpol {command} -i inventory/hosts.yml" in result.output


def test_extra_vars_merge_in_order(tmp_path: Path) -> None:
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("a: 1\nb: [x, y]\n")
    merged: dict[str, Any] = parse_extra_vars(
        ["a=0 c='two words'", f"@{vars_file}", '{"d": true}', "b=last"]
    )
    assert merged == {"a": 1, "b": "last", "c": "two words", "d": True}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("=x", "expected key=value"),
        ("1abc=x", "expected key=value"),
        ("{not: [closed", "not a valid JSON/YAML mapping"),
        ("[1, 2]", "expected key=value"),
    ],
)
def test_bad_extra_vars_name_the_value(value: str, message: str) -> None:
    with pytest.raises(Exception, match="--extra-vars") as raised:
        parse_extra_vars([value])
    assert message in str(raised.value)


def test_extra_vars_file_must_hold_a_mapping(tmp_path: Path) -> None:
    vars_file = tmp_path / "list.yml"
    vars_file.write_text("- a\n- b\n")
    with pytest.raises(Exception, match=f"@{vars_file}: must hold a mapping"):
        parse_extra_vars([f"@{vars_file}"])


@pytest.fixture(scope="module")
def recorded_events() -> list[dict[str, Any]]:
    """The events of a real run with one failing task, to replay into the progress display."""
    events: list[dict[str, Any]] = []
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    run_playbook(
        Path(__file__).parent / "data" / "playbooks" / "fail.yml",
        inventory={"all": {"hosts": {"node-a": local}}},
        on_event=events.append,
    )
    return events


def test_progress_on_a_terminal_shows_hosts_tasks_and_counts(
    recorded_events: list[dict[str, Any]],
) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)
    with RunProgress("k3s-netpol test", console=console) as progress:
        for event in recorded_events:
            progress(event)
        table = progress._render()
    assert progress.hosts["node-a"].ok == 1
    assert progress.hosts["node-a"].failed == 1
    drawn = screen.getvalue()
    assert "PLAY Fail on purpose for the runner tests" in drawn
    assert "FAILED node-a: Fail with a message the test looks for." in drawn
    rendered = io.StringIO()
    Console(file=rendered, width=160, color_system=None).print(table)
    [row] = [line for line in rendered.getvalue().splitlines() if "node-a" in line]
    cells = [cell.strip() for cell in row.strip("│┃ ").split("│")]
    assert cells == ["node-a", "1", "0", "1", "0", "0", "Fail with a message the test looks for."]


def test_progress_off_a_terminal_prints_plays_and_failures_only(
    recorded_events: list[dict[str, Any]],
) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=False, width=160, soft_wrap=True)
    with RunProgress("k3s-netpol test", console=console) as progress:
        for event in recorded_events:
            progress(event)
    assert screen.getvalue().splitlines() == [
        "PLAY Fail on purpose for the runner tests",
        "FAILED node-a: Fail with a message the test looks for.",
    ]


def test_relative_netpol_artifacts_dir_is_taken_from_the_current_directory(
    artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("verify", "-e", "netpol_artifacts_dir=relative-artifacts", "--json")
    assert result.exit_code == ExitCode.OK, result.output
    assert (tmp_path / "relative-artifacts" / "report.json").is_file()
    assert json.loads(result.stdout)["report_path"] == str(
        tmp_path / "relative-artifacts" / "report.json"
    )
