"""The `k3s-netpol` command line: one click group, one module per family of subcommands."""

import click

from k3s_netpol import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="k3s-netpol")
def main() -> None:
    """Provision K3s with visible NetworkPolicy enforcement, and prove it.

    Exit codes: 0 ok, 1 verification mismatch, 2 usage error, 3 run failed.
    """


# Subcommands register themselves below, one line each.
from k3s_netpol.cli.run import register as _register_run_commands  # noqa: E402

_register_run_commands(main)
from k3s_netpol.cli.bundle import bundle as _bundle_command  # noqa: E402

main.add_command(_bundle_command)
from k3s_netpol.cli.report import report_command as _report_command  # noqa: E402

main.add_command(_report_command)
from k3s_netpol.cli.expect import expect_command as _expect_command  # noqa: E402

main.add_command(_expect_command)
from k3s_netpol.cli.logs import logs_command as _logs_command  # noqa: E402

main.add_command(_logs_command)
from k3s_netpol.cli.lab import lab as _lab_command  # noqa: E402

main.add_command(_lab_command)
