"""`k3s-netpol bundle render|validate`: the multitenant policy bundle, rendered and checked."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from k3s_netpol.bundle import (
    BundleConfig,
    BundleConfigError,
    config_from_yaml,
    load_config,
    render,
    render_yaml,
    validate_manifests,
    validate_text,
)
from k3s_netpol.cli._common import ExitCode, stderr_console, usage_error
from k3s_netpol.files import STDIN, InputFileError, read_text, write_if_changed
from k3s_netpol.model import ManifestError


@click.group("bundle")
def bundle() -> None:
    """Render the multitenant NetworkPolicy bundle, or validate policy files offline."""


@bundle.command("render")
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    metavar="NS",
    help="Target namespace (repeatable); replaces the configuration's namespaces.",
)
@click.option(
    "-c",
    "--config",
    "config_path",
    default=None,
    metavar="FILE",
    help="YAML settings (keys as in the netpol_bundle role, without its prefix); '-' = stdin.",
)
@click.option(
    "--key-prefix",
    default="",
    metavar="PREFIX",
    help="The configuration's keys carry this prefix (the role passes netpol_bundle_).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the bundle here instead of stdout: a regular file is replaced atomically, only "
    "when its content changes, keeping its mode and owner; '-', a FIFO or a character device is "
    "written through; a symbolic link, a directory or another special file is refused.",
)
def render_command(
    namespaces: tuple[str, ...],
    config_path: str | None,
    key_prefix: str,
    output: Path | None,
) -> None:
    """Render the bundle as multi-document YAML.

    Exit codes: 0 ok, 2 bad settings (the message names the file and the key).
    """
    try:
        if config_path == "-":
            label = "variables" if key_prefix else "<stdin>"
            config = config_from_yaml(read_text(STDIN), label, key_prefix)
        elif config_path is not None:
            config = load_config(config_path, key_prefix)
        else:
            config = BundleConfig()
        if namespaces:
            config = replace(config, namespaces=namespaces)
    except (BundleConfigError, InputFileError) as error:
        raise usage_error(str(error)) from error
    text = render_yaml(render(config))
    if output is None or str(output) == STDIN:
        click.echo(text, nl=False)
        return
    written = write_if_changed(output, text.encode("utf-8"))
    stderr_console().print(f"{output}: {'written' if written else 'unchanged'}", markup=False)


@bundle.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate_command(files: tuple[Path, ...]) -> None:
    """Validate manifest files offline: NetworkPolicy fields, names, nflog annotations.

    FILE '-' reads the standard input.

    Exit codes: 0 every file valid, 2 a file is invalid (the message names the file and field).
    """
    console = stderr_console()
    invalid = 0
    for path in files:
        try:
            if str(path) == "-":
                documents = validate_text(read_text(STDIN), "<stdin>")
            else:
                documents = validate_manifests(path)
        except (ManifestError, InputFileError) as error:
            invalid += 1
            console.print(f"invalid: {error}", markup=False, style="red")
            continue
        click.echo(f"{path}: valid ({len(documents)} objects)")
    if invalid:
        sys.exit(ExitCode.USAGE)
