"""Helpers every `k3s-netpol` subcommand shares: exit codes, errors, JSON output, the common
playbook options, and a live progress display for playbook runs."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import yaml

from k3s_netpol.cli._exits import ExitCode as ExitCode
from k3s_netpol.files import InputFileError, read_text

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from k3s_netpol.runner import RunResult


class CommandError(click.ClickException):
    """A run that failed or could not start: exit 3, with a message saying what to do."""

    exit_code = ExitCode.RUN_FAILED


class UsageProblem(CommandError):
    """Bad input from the user (a missing file, a malformed value): exit 2."""

    exit_code = ExitCode.USAGE


class Interrupted(CommandError):
    """Ctrl-C during a run: exit 130, with a message saying what state it left."""

    exit_code = ExitCode.INTERRUPTED


def usage_error(message: str) -> UsageProblem:
    return UsageProblem(message)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout (progress and errors go to stderr)."""
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


def parse_extra_vars(values: Sequence[str]) -> dict[str, Any]:
    """Merge `-e` values in order, as ansible-playbook does: `key=value [key=value ...]` (values
    stay strings), `@file.yml` (a YAML or JSON mapping), or an inline JSON/YAML mapping `{...}`."""
    merged: dict[str, Any] = {}
    for value in values:
        text = value.strip()
        if text.startswith("@"):
            path = Path(text[1:]).expanduser()
            try:
                loaded = yaml.safe_load(read_text(path))
            except InputFileError as error:
                raise usage_error(f"--extra-vars @{error}") from error
            except yaml.YAMLError as error:
                raise usage_error(f"--extra-vars @{path}: not valid YAML: {error}") from error
            if loaded is None:
                continue
            if not isinstance(loaded, dict):
                raise usage_error(
                    f"--extra-vars @{path}: must hold a mapping of variables, "
                    f"got {type(loaded).__name__}"
                )
            merged.update(loaded)
        elif text.startswith("{"):
            try:
                loaded = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise usage_error(
                    f"--extra-vars {text!r}: not a valid JSON/YAML mapping"
                ) from error
            if not isinstance(loaded, dict):
                raise usage_error(f"--extra-vars {text!r}: not a mapping")
            merged.update(loaded)
        else:
            try:
                tokens = shlex.split(text)
            except ValueError as error:
                raise usage_error(f"--extra-vars {text!r}: {error}") from error
            if not tokens:
                raise usage_error("--extra-vars: empty value; use key=value or @file.yml")
            for token in tokens:
                key, separator, item = token.partition("=")
                if not separator or not key.isidentifier():
                    raise usage_error(
                        f"--extra-vars {token!r}: expected key=value (a variable name, '=', "
                        "a value) or @file.yml"
                    )
                merged[key] = item
    for key in merged:
        if not isinstance(key, str) or not key.isidentifier():
            raise usage_error(f"--extra-vars: {key!r} is not a valid Ansible variable name")
    return merged


_Command = TypeVar("_Command", bound=Callable[..., Any])


def playbook_options(command: _Command) -> _Command:
    """The options every playbook-running subcommand takes (the same names as ansible-playbook)."""
    options = [
        click.option(
            "-i",
            "--inventory",
            type=click.Path(path_type=Path),
            default=None,
            help="Inventory file or directory (default: ansible.cfg's, the built-in lab).",
        ),
        click.option(
            "-e",
            "--extra-vars",
            "extra_vars",
            multiple=True,
            metavar="KEY=VALUE|@FILE",
            help="Extra variables, key=value or @file.yml; repeatable, later ones win.",
        ),
        click.option("-t", "--tags", default=None, help="Only run tasks with these tags (a,b)."),
        click.option("--skip-tags", default=None, help="Skip tasks with these tags (a,b)."),
        click.option("-l", "--limit", default=None, help="Limit to hosts matching this pattern."),
        click.option("-C", "--check", is_flag=True, help="Dry run: report what would change."),
        click.option("-D", "--diff", is_flag=True, help="Show the changes made to files."),
        click.option("-v", "--verbose", count=True, help="Ansible verbosity (-v to -vvvvvv)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout."),
        click.option(
            "--keep-run-dir",
            is_flag=True,
            help="Keep ansible-runner's private data dir (events, stdout) for debugging.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@dataclass
class PlaybookOptions:
    """The parsed values of `playbook_options`."""

    inventory: Path | None = None
    extra_vars: dict[str, Any] = field(default_factory=dict)
    tags: str | None = None
    skip_tags: str | None = None
    limit: str | None = None
    check: bool = False
    diff: bool = False
    verbose: int = 0
    as_json: bool = False
    keep_run_dir: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PlaybookOptions:
        return cls(
            inventory=params.get("inventory"),
            extra_vars=parse_extra_vars(params.get("extra_vars") or ()),
            tags=params.get("tags"),
            skip_tags=params.get("skip_tags"),
            limit=params.get("limit"),
            check=bool(params.get("check")),
            diff=bool(params.get("diff")),
            verbose=int(params.get("verbose") or 0),
            as_json=bool(params.get("as_json")),
            keep_run_dir=bool(params.get("keep_run_dir")),
        )


@dataclass
class _HostProgress:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    task: str = ""


class RunProgress:
    """An `on_event` callback that shows the run: on a terminal, a live table (play, current
    task, per-host counts) redrawn in place; elsewhere, one line per play and per failure."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.title = title
        self.console = console or stderr_console()
        self.play = ""
        self.task = ""
        self.hosts: dict[str, _HostProgress] = {}
        self.started = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> RunProgress:
        if self.console.is_terminal:
            from rich.live import Live

            self._live = Live(
                self._render(), console=self.console, refresh_per_second=8, transient=True
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def _host(self, name: str) -> _HostProgress:
        return self.hosts.setdefault(name, _HostProgress())

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        host = str(data.get("host") or "")
        if kind == "playbook_on_play_start":
            self.play = str(data.get("play") or data.get("name") or "")
            self._line(f"[bold]PLAY[/bold] {self.play}")
        elif kind == "playbook_on_task_start":
            self.task = str(data.get("task") or data.get("name") or "")
        elif kind == "runner_on_start" and host:
            self._host(host).task = str(data.get("task") or "")
        elif kind == "runner_on_ok" and host:
            counters = self._host(host)
            counters.ok += 1
            if (data.get("res") or {}).get("changed"):
                counters.changed += 1
        elif kind == "runner_on_skipped" and host:
            self._host(host).skipped += 1
        elif kind == "runner_on_failed" and host:
            if data.get("ignore_errors"):
                self._host(host).ok += 1
            else:
                self._host(host).failed += 1
                self._line(f"[red]FAILED[/red] {host}: {data.get('task')}")
        elif kind == "runner_on_unreachable" and host:
            self._host(host).unreachable += 1
            self._line(f"[red]UNREACHABLE[/red] {host}: {data.get('task')}")
        if self._live is not None:
            self._live.update(self._render())

    def _line(self, markup: str) -> None:
        self.console.print(markup)

    def _render(self) -> Table:
        from rich.table import Table

        elapsed = time.monotonic() - self.started
        table = Table(
            title=f"{self.title}  {self.play}  [dim]{elapsed:.0f}s[/dim]",
            title_justify="left",
            expand=False,
        )
        for column in ("host", "ok", "changed", "failed", "unreachable", "skipped", "task"):
            table.add_column(column, justify="left" if column in ("host", "task") else "right")
        for name, counters in sorted(self.hosts.items()):
            table.add_row(
                name,
                str(counters.ok),
                str(counters.changed),
                str(counters.failed),
                str(counters.unreachable),
                str(counters.skipped),
                counters.task or self.task,
            )
        if not self.hosts:
            table.add_row("-", "", "", "", "", "", self.task or "starting")
        return table


@contextmanager
def _maybe_progress(title: str, enabled: bool) -> Iterator[RunProgress | None]:
    if not enabled:
        yield None
        return
    with RunProgress(title) as progress:
        yield progress


def run_with_progress(
    playbook: str | Path,
    options: PlaybookOptions,
    *,
    title: str | None = None,
    envvars: Mapping[str, str] | None = None,
    progress: bool = True,
) -> RunResult:
    """Run one playbook with the parsed options and a progress display on stderr. Bad input
    becomes a usage error (exit 2); a run that cannot start becomes exit 3."""
    from k3s_netpol.runner import (
        PROJECT_DIR_ENV,
        PlaybookNotFoundError,
        ProjectNotFoundError,
        RunnerInputError,
        RunNotStoppedError,
        run_playbook,
    )

    with _maybe_progress(title or str(playbook), progress) as display:
        try:
            return run_playbook(
                playbook,
                inventory=options.inventory,
                extravars=options.extra_vars or None,
                tags=options.tags,
                skip_tags=options.skip_tags,
                limit=options.limit,
                check=options.check,
                diff=options.diff,
                verbosity=options.verbose,
                on_event=display,
                envvars=envvars,
                keep_private_data_dir=options.keep_run_dir,
            )
        except (PlaybookNotFoundError, ProjectNotFoundError) as error:
            raise CommandError(
                f"{error}; the k3s-netpol project is incomplete here: use a full checkout "
                f"or set {PROJECT_DIR_ENV} to one"
            ) from error
        except RunnerInputError as error:
            raise usage_error(str(error)) from error
        except RunNotStoppedError as error:
            raise CommandError(f"{playbook}: {error}") from error
        except OSError as error:
            raise CommandError(f"{playbook}: could not start ansible-playbook: {error}") from error
        except KeyboardInterrupt as error:
            raise Interrupted(
                f"{playbook}: interrupted; the nodes may be half-configured: run the command "
                "again to finish (the playbooks are idempotent)"
            ) from error


def print_run_result(result: RunResult, console: Console | None = None) -> None:
    """The run's recap on stderr: per-host counts, then each failure with its message."""
    console = console or stderr_console()
    colour = "green" if result.ok else "red"
    console.print(f"[{colour}]{result.summary().splitlines()[0]}[/{colour}]")
    for host, stats in sorted(result.stats.items()):
        console.print(
            f"  {host}: ok={stats.ok} changed={stats.changed} failed={stats.failed} "
            f"unreachable={stats.unreachable} skipped={stats.skipped} rescued={stats.rescued} "
            f"ignored={stats.ignored}",
            markup=False,
        )
    for failure in result.failures:
        console.print(f"  {failure.describe()}", markup=False, style="red")
        if failure.unreachable:
            console.print(
                f"    -> check that {failure.host} is up and that the inventory's address, "
                "port, user and connection settings for it are right",
                markup=False,
            )
    if not result.ok and not result.failures and result.output_tail:
        console.print(result.output_tail, markup=False)
    if result.private_data_dir:
        console.print(f"  run directory kept: {result.private_data_dir}", markup=False)
