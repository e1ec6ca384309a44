"""`k3s-netpol provision | apply | verify | reset`: the project's playbooks, run through
ansible-runner with a progress display, a recap, `--json`, and meaningful exit codes."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from k3s_netpol.cli._common import (
    CommandError,
    ExitCode,
    PlaybookOptions,
    emit_json,
    playbook_options,
    print_run_result,
    run_with_progress,
    stderr_console,
    usage_error,
)
from k3s_netpol.runner import ARTIFACTS_DIR_ENV, RunResult, default_artifacts_dir

PROVISION_PLAYBOOKS = ("playbooks/k3s.yml", "playbooks/ulogd.yml")
SITE_PLAYBOOK = "site.yml"
APPLY_PLAYBOOKS = ("playbooks/policies.yml",)
VERIFY_PLAYBOOKS = ("playbooks/verify.yml",)
RESET_PLAYBOOKS = ("playbooks/reset.yml",)
REPORT_NAME = "report.json"


def artifacts_dir_for(options: PlaybookOptions, artifacts_dir: Path | None) -> Path:
    """The controller-side artifacts directory this run uses: `-e netpol_artifacts_dir=...`
    wins, then `--artifacts-dir`, then `default_artifacts_dir()`."""
    from_extra_vars = options.extra_vars.get("netpol_artifacts_dir")
    if from_extra_vars:
        return Path(str(from_extra_vars)).expanduser().resolve()
    if artifacts_dir is not None:
        return artifacts_dir.expanduser().resolve()
    return default_artifacts_dir()


def load_verify_report(path: Path, not_before: float | None = None) -> dict[str, Any]:
    """Read the verify role's report (`{"ok": bool, ...}`); with `not_before` (a time.time()
    value), refuse a report older than the run, which would be a stale one."""
    try:
        stat = path.stat()
    except FileNotFoundError as error:
        raise CommandError(
            f"{path}: the verify playbook wrote no report; check that netpol_artifacts_dir "
            "points here and that the verify role ran on at least one host (see --limit/--tags)"
        ) from error
    if not_before is not None and stat.st_mtime < not_before - 1:
        raise CommandError(
            f"{path}: the report predates this run, so the verify playbook did not rewrite it; "
            "check that the verify role ran (see --limit/--tags)"
        )
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CommandError(f"{path}: not a readable JSON report: {error}") from error
    if not isinstance(report, dict):
        raise CommandError(f"{path}: must hold a JSON object, got {type(report).__name__}")
    if not isinstance(report.get("ok"), bool):
        raise CommandError(f"{path}: field ok: missing or not a boolean")
    return report


def _mismatched_rows(report: dict[str, Any]) -> list[Any]:
    rows = report.get("rows")
    if not isinstance(rows, list):
        return []
    return [row for row in rows if isinstance(row, dict) and row.get("ok") is False]


def _print_report(report: dict[str, Any], path: Path) -> None:
    console = stderr_console()
    if report["ok"]:
        console.print(f"[green]verification ok[/green]: {path}")
        return
    console.print(f"[red]verification MISMATCH[/red]: {path}")
    for row in _mismatched_rows(report)[:50]:
        console.print(f"  {json.dumps(row, sort_keys=True)}", markup=False)


def run_sequence(
    command: str,
    playbooks: Sequence[str],
    options: PlaybookOptions,
    artifacts_dir: Path,
) -> list[RunResult]:
    """Run the playbooks in order and stop at the first that fails."""
    results: list[RunResult] = []
    envvars = {ARTIFACTS_DIR_ENV: str(artifacts_dir)}
    for playbook in playbooks:
        result = run_with_progress(
            playbook, options, title=f"k3s-netpol {command}: {playbook}", envvars=envvars
        )
        print_run_result(result)
        results.append(result)
        if not result.ok:
            break
    return results


def _finish(
    command: str,
    options: PlaybookOptions,
    results: list[RunResult],
    *,
    report: dict[str, Any] | None = None,
    report_path: Path | None = None,
) -> None:
    runs_ok = all(result.ok for result in results)
    if not runs_ok:
        exit_code = ExitCode.RUN_FAILED
    elif report is not None and not report["ok"]:
        exit_code = ExitCode.MISMATCH
    else:
        exit_code = ExitCode.OK
    if options.as_json:
        emit_json(
            {
                "command": command,
                "ok": exit_code == ExitCode.OK,
                "exit_code": int(exit_code),
                "runs": [result.to_dict() for result in results],
                "report": report,
                "report_path": str(report_path) if report_path is not None else None,
            }
        )
    if exit_code == ExitCode.RUN_FAILED:
        stderr_console().print(
            "[red]run failed[/red]: fix the failures above and run the command again "
            "(-v for more detail, --keep-run-dir to keep the run's events)"
        )
    click.get_current_context().exit(int(exit_code))


_artifacts_option = click.option(
    "--artifacts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Controller-side artifacts directory (default: ${ARTIFACTS_DIR_ENV}, else "
    "./artifacts of the checkout or of the current directory).",
)


def _run_and_report(
    command: str, playbooks: Sequence[str], params: dict[str, Any], read_report: bool
) -> None:
    options = PlaybookOptions.from_params(params)
    artifacts_dir = artifacts_dir_for(options, params.get("artifacts_dir"))
    if "netpol_artifacts_dir" in options.extra_vars:
        # Ansible runs in the project directory: hand it the path as resolved from here.
        options.extra_vars["netpol_artifacts_dir"] = str(artifacts_dir)
    try:
        artifacts_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise usage_error(
            f"artifacts directory {artifacts_dir}: cannot create it ({error.strerror}); "
            f"choose another with --artifacts-dir or ${ARTIFACTS_DIR_ENV}"
        ) from error
    started = time.time()
    results = run_sequence(command, playbooks, options, artifacts_dir)
    report: dict[str, Any] | None = None
    report_path: Path | None = None
    if read_report and all(result.ok for result in results) and not options.check:
        report_path = artifacts_dir / REPORT_NAME
        report = load_verify_report(report_path, not_before=started)
        _print_report(report, report_path)
    _finish(command, options, results, report=report, report_path=report_path)


@click.command(
    epilog="""\b
Examples:
  k3s-netpol provision -i inventory/hosts.yml
  k3s-netpol provision -i inventory/hosts.yml --limit server --check --diff
  k3s-netpol provision --all              # site.yml on the built-in lab, verify included
  k3s-netpol provision -e k3s_version=v1.31.4+k3s1 -e @vars.yml --json
"""
)
@click.option(
    "--all",
    "run_site",
    is_flag=True,
    help="Run site.yml: nodes, K3s, ulogd2, the bundle, the lab and verify; then check the report.",
)
@_artifacts_option
@playbook_options
def provision(run_site: bool, **params: Any) -> None:
    """Install K3s (kube-router's policy controller on) and ulogd2 on NFLOG group 100.

    Runs playbooks/k3s.yml then playbooks/ulogd.yml, or site.yml with --all.
    Exit codes: 0 ok, 1 verification mismatch (--all only), 2 usage error, 3 run failed.
    """
    if run_site:
        _run_and_report("provision", (SITE_PLAYBOOK,), params, read_report=True)
    else:
        _run_and_report("provision", PROVISION_PLAYBOOKS, params, read_report=False)


@click.command(
    epilog="""\b
Examples:
  k3s-netpol apply -i inventory/hosts.yml
  k3s-netpol apply -i inventory/hosts.yml --check --diff
"""
)
@_artifacts_option
@playbook_options
def apply(**params: Any) -> None:
    """Render the NetworkPolicy bundle on this machine and apply it on the first server.

    Runs playbooks/policies.yml. Exit codes: 0 ok, 2 usage error, 3 run failed.
    """
    _run_and_report("apply", APPLY_PLAYBOOKS, params, read_report=False)


@click.command(
    epilog="""\b
Examples:
  k3s-netpol verify -i inventory/hosts.yml
  k3s-netpol verify --json | jq .report.ok
  k3s-netpol verify -e netpol_artifacts_dir=/tmp/netpol   # report at /tmp/netpol/report.json
"""
)
@_artifacts_option
@playbook_options
def verify(**params: Any) -> None:
    """Curl every pod pair, check the drop logs, and compare with what the policies allow.

    Runs playbooks/verify.yml, then reads the report it writes to
    <artifacts dir>/report.json. Exit codes: 0 every pair as expected and every blocked
    connection logged, 1 mismatch, 2 usage error, 3 run failed.
    """
    _run_and_report("verify", VERIFY_PLAYBOOKS, params, read_report=True)


@click.command(
    epilog="""\b
Examples:
  k3s-netpol reset -i inventory/hosts.yml            # asks before doing anything
  k3s-netpol reset -i inventory/hosts.yml --yes --limit agent
"""
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_artifacts_option
@playbook_options
def reset(yes: bool, **params: Any) -> None:
    """Uninstall K3s from the inventory's nodes (runs playbooks/reset.yml).

    Asks for confirmation unless --yes. Exit codes: 0 ok, 2 usage error or declined,
    3 run failed.
    """
    if not yes:
        target = params.get("inventory") or "the default inventory (the lab)"
        limit = params.get("limit")
        scope = f"{target}" + (f" limited to {limit}" if limit else "")
        try:
            confirmed = click.confirm(
                f"This uninstalls K3s and removes its data on every node of {scope}. Continue?",
                default=False,
                err=True,
            )
        except click.Abort as error:
            raise usage_error(
                "reset needs confirmation: answer on a terminal, or pass --yes"
            ) from error
        if not confirmed:
            raise usage_error("reset declined: nothing was changed")
    _run_and_report("reset", RESET_PLAYBOOKS, params, read_report=False)
