"""The exit-code policy of every `k3s-netpol` subcommand, applied once around the whole CLI.

0 ok; 1 verification mismatch; 2 usage error or bad input (a file that cannot be read, is not
UTF-8, is malformed; a bad value), with a message naming the file or field; 3 a run failed
(a playbook, a host, a gathered log); 4 an internal error, a bug in k3s-netpol, reported in one
short paragraph saying where to report it (`K3S_NETPOL_DEBUG=1` prints the traceback);
130 interrupted (Ctrl-C), saying on stderr that any output so far is partial; 141 standard output
closed by its reader (`| head`), quietly, as a tool killed by SIGPIPE reports it.

This module imports nothing heavy: `k3s-netpol logs` runs through it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from enum import IntEnum

import click

DEBUG_ENV = "K3S_NETPOL_DEBUG"
REPORT_BUGS_AT = "the k3s-netpol issue tracker (`issues` in the project checkout)"


class ExitCode(IntEnum):
    """What the process exit status means, for every subcommand."""

    OK = 0
    MISMATCH = 1
    USAGE = 2
    RUN_FAILED = 3
    INTERNAL_ERROR = 4
    INTERRUPTED = 130
    OUTPUT_CLOSED = 141


# The package's bad-input errors, as `module:class`: checked only when their module is loaded,
# so that the policy costs no import.
_INPUT_ERRORS = (
    "k3s_netpol.model:ManifestError",
    "k3s_netpol.logs:LogParseError",
    "k3s_netpol.bundle:BundleConfigError",
    "k3s_netpol.lab:LabError",
    "k3s_netpol.runner:RunnerInputError",
    "k3s_netpol.files:InputFileError",
    "yaml:YAMLError",
)


class OutputClosed(Exception):
    """Standard output's reader went away (EPIPE); not an OSError, so click passes it on."""


def _is_input_error(error: BaseException) -> bool:
    if isinstance(error, (OSError, UnicodeError)):
        return True
    for name in _INPUT_ERRORS:
        module_name, _, class_name = name.partition(":")
        module = sys.modules.get(module_name)
        error_class = getattr(module, class_name, None) if module is not None else None
        if isinstance(error_class, type) and isinstance(error, error_class):
            return True
    return False


def _input_message(error: BaseException) -> str:
    if isinstance(error, UnicodeDecodeError):
        byte = error.object[error.start]
        return f"input is not UTF-8 text (byte {byte:#04x} at offset {error.start})"
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


def _silence_stdout() -> None:
    """Point standard output at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        descriptor = os.open(os.devnull, os.O_WRONLY)
        os.dup2(descriptor, sys.stdout.fileno())
        os.close(descriptor)
    except (OSError, ValueError, AttributeError):
        pass


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed from None
    except (OSError, ValueError):
        pass


def _bug_report(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno} ({frames[-1].name})" if frames else ""
    from k3s_netpol import __version__

    return (
        f"internal error{where}: {type(error).__name__}: {error}\n"
        f"This is a bug in k3s-netpol {__version__}, not a problem with your input. Please report "
        f"it at {REPORT_BUGS_AT} with the command line; set {DEBUG_ENV}=1 to include the traceback."
    )


def _err(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        click.echo(message, err=True)


def guard_output(invoke: Callable[[], object]) -> object:
    """Call ``invoke`` turning EPIPE on standard output into `OutputClosed`; used inside click's
    main, where click would otherwise turn EPIPE into exit 1."""
    try:
        result = invoke()
        _flush_stdout()
        return result
    except BrokenPipeError:
        raise OutputClosed from None


def run_with_policy(main: Callable[[], object]) -> int:
    """Run ``main`` (click's main in non-standalone mode) and return the policy's exit code,
    printing the message that goes with it on stderr."""
    try:
        result = main()
        _flush_stdout()
        return result if isinstance(result, int) else ExitCode.OK
    except SystemExit as leaving:
        code = leaving.code
        if code is None or isinstance(code, int):
            return code or ExitCode.OK
        _err(f"Error: {code}")
        return ExitCode.USAGE
    except OutputClosed:
        _silence_stdout()
        return ExitCode.OUTPUT_CLOSED
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except (click.Abort, KeyboardInterrupt) as error:
        interrupted = isinstance(error, KeyboardInterrupt) or isinstance(
            error.__cause__ or error.__context__, KeyboardInterrupt
        )
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            _silence_stdout()
        if interrupted:
            _err("k3s-netpol: interrupted (Ctrl-C): output printed or written so far is partial")
            return ExitCode.INTERRUPTED
        _err("k3s-netpol: aborted: nothing more was done")
        return ExitCode.USAGE
    except Exception as error:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exception(error)
        if isinstance(error, BrokenPipeError):
            _silence_stdout()
            return ExitCode.OUTPUT_CLOSED
        if _is_input_error(error):
            _err(f"Error: {_input_message(error)}")
            return ExitCode.USAGE
        _err(f"k3s-netpol: {_bug_report(error)}")
        return ExitCode.INTERNAL_ERROR
