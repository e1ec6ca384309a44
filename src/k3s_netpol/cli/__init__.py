"""The `k3s-netpol` command line: one click group, one module per family of subcommands.

The group imports a subcommand's module only when that subcommand runs (or when `--help` lists
them all), so `k3s-netpol logs` never pays for ansible-runner, rich or the playbook machinery.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from k3s_netpol import __version__
from k3s_netpol.cli._exits import guard_output, run_with_policy

SUBCOMMANDS = {
    "apply": "k3s_netpol.cli.run:apply",
    "bundle": "k3s_netpol.cli.bundle:bundle",
    "expect": "k3s_netpol.cli.expect:expect_command",
    "explain": "k3s_netpol.cli.explain:explain_command",
    "lab": "k3s_netpol.cli.lab:lab",
    "logs": "k3s_netpol.cli.logs:logs_command",
    "provision": "k3s_netpol.cli.run:provision",
    "report": "k3s_netpol.cli.report:report_command",
    "reset": "k3s_netpol.cli.run:reset",
    "verify": "k3s_netpol.cli.run:verify",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are `module:attribute` names, imported on first use."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands and cmd_name not in self.commands:
            self.add_command(self._import(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        return guard_output(lambda: super(LazyGroup, self).invoke(ctx))

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """click's main under the exit-code policy of `k3s_netpol.cli._exits` (standalone mode
        only; `standalone_mode=False` is click's own behaviour, for embedding)."""

        def run() -> object:
            return super(LazyGroup, self).main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )

        if not standalone_mode:
            return run()
        sys.exit(run_with_policy(run))

    def _import(self, cmd_name: str) -> click.Command:
        module_name, _, attribute = self.lazy_subcommands[cmd_name].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}:{attribute} is not a click command")
        return command


@click.group(
    cls=LazyGroup,
    lazy_subcommands=SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="k3s-netpol")
def main() -> None:
    """Provision K3s with visible NetworkPolicy enforcement, and prove it.

    \b
    Exit codes (every subcommand):
      0    ok
      1    verification mismatch
      2    usage error or bad input (the message names the file or field)
      3    run failed (a playbook, a host, a gathering)
      4    internal error: a bug in k3s-netpol (set K3S_NETPOL_DEBUG=1 for the traceback)
      130  interrupted (Ctrl-C); output so far is partial
      141  standard output closed by its reader (| head), quietly
    """
