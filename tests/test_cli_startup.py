"""The CLI imports a subcommand's module only when it runs: `logs` and `expect` load neither
ansible-runner nor the playbook machinery, and `--help` still lists every subcommand."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from k3s_netpol.cli import SUBCOMMANDS, main

LOG = Path(__file__).parent / "data" / "logs" / "syslogemu.log"
CLUSTER = Path(__file__).parent / "data" / "netpol-cases" / "cluster.yaml"
PLAYBOOK_MODULES = ("ansible_runner", "k3s_netpol.runner", "k3s_netpol.cli._common")


def modules_loaded_by(*invocations: list[str]) -> set[str]:
    """Run the CLI in a fresh interpreter through click's CliRunner; the modules it loaded."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from click.testing import CliRunner
        from k3s_netpol.cli import main
        for arguments in {[list(arguments) for arguments in invocations]!r}:
            result = CliRunner().invoke(main, arguments)
            assert result.exit_code == 0, (arguments, result.output, result.exception)
        print(json.dumps(sorted(sys.modules)))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return set(json.loads(completed.stdout))


def test_logs_imports_neither_ansible_runner_nor_rich(tmp_path: Path):
    empty = tmp_path / "empty.log"
    empty.touch()
    loaded = modules_loaded_by(
        ["logs", "--help"],
        ["logs", str(empty), "--summary"],
        ["logs", str(LOG), "--summary", "--jobs", "1"],
        ["logs", str(LOG)],
    )
    assert "k3s_netpol.cli.logs" in loaded
    assert "k3s_netpol.logscan" in loaded
    for module in (*PLAYBOOK_MODULES, "rich", "yaml", "k3s_netpol.cli.run"):
        assert module not in loaded


def test_expect_json_imports_neither_ansible_runner_nor_rich():
    loaded = modules_loaded_by(["expect", "-f", str(CLUSTER), "-o", "json"])
    assert "k3s_netpol.model" in loaded
    for module in ("ansible_runner", "k3s_netpol.runner", "rich", "k3s_netpol.cli.logs"):
        assert module not in loaded


def test_the_table_of_expect_still_loads_rich_but_not_ansible_runner():
    loaded = modules_loaded_by(["expect", "-f", str(CLUSTER)])
    assert "rich.table" in loaded
    assert "ansible_runner" not in loaded


def test_a_playbook_command_still_loads_the_runner():
    loaded = modules_loaded_by(["provision", "--help"])
    assert {"k3s_netpol.cli.run", "k3s_netpol.cli._common"} <= loaded


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_lazy_name_resolves_to_the_command_of_that_name(name: str):
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command)
    assert command.name == name


def test_help_lists_every_subcommand_with_its_one_line_help():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:\n", 1)[1].splitlines()
    rows = dict(line.split(None, 1) for line in listed if line.strip())
    assert sorted(rows) == sorted(SUBCOMMANDS)
    context = click.Context(main)
    for name, text in rows.items():
        command = main.get_command(context, name)
        assert command is not None
        shown = text.strip().removesuffix("...")
        assert shown
        assert command.get_short_help_str(limit=1000).startswith(shown)


def test_an_unknown_subcommand_is_a_usage_error():
    result = CliRunner().invoke(main, ["nosuch"])
    assert result.exit_code == 2
    assert "No such command 'nosuch'" in result.output
