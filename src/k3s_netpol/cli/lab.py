"""`k3s-netpol lab compile | up | verify | down`: the lab, kube-router's enforcement rehearsed
on this machine (see docs/lab.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from k3s_netpol.cli._common import (
    ExitCode,
    PlaybookOptions,
    emit_json,
    playbook_options,
    stderr_console,
    usage_error,
)
from k3s_netpol.cli.run import (
    REPORT_NAME,
    artifacts_dir_for,
    load_verify_report,
    run_sequence,
)
from k3s_netpol.kuberouter import DEFAULT_NFLOG_BURST, DEFAULT_NFLOG_LIMIT
from k3s_netpol.lab import (
    BRIDGE_ADDRESS,
    BUILTIN_WORKLOADS,
    LAB_FILE,
    MAX_SEED,
    LabError,
    LogLimit,
    compile_cluster,
    parse_node_spec,
    read_sync_summary,
    stored_seed,
    write_compiled,
)
from k3s_netpol.model import ManifestError, load_manifests
from k3s_netpol.runner import ARTIFACTS_DIR_ENV, RunResult, project_root

LAB_INVENTORY = "inventory/lab.yml"
UP_PLAYBOOKS = (
    "playbooks/lab_nodes.yml",
    "playbooks/ulogd.yml",
    "playbooks/policies.yml",
    "playbooks/lab.yml",
)
VERIFY_PLAYBOOKS = ("playbooks/verify.yml",)
SYNC_PLAYBOOKS = ("playbooks/lab.yml",)
DOWN_PLAYBOOKS = ("playbooks/lab_down.yml",)


@click.group("lab")
def lab() -> None:
    """The lab: systemd containers as K3s nodes (server and agent), pods as network namespaces
    on each node's cni0, flannel.1 between nodes, real nginx and ulogd2, and the policies
    compiled per node into kube-router's ipsets and iptables rules."""


@lab.command(
    "compile",
    epilog="""\b
Examples:
  k3s-netpol lab compile -f artifacts/bundle.yaml --builtin-workloads \\
      --node k3s-netpol-lab-server=10.42.0.1/24@10.89.0.2 \\
      --node k3s-netpol-lab-agent=10.42.1.1/24@10.89.0.3 --out artifacts/lab
""",
)
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Manifests: Namespaces, Pods (status.podIP), NetworkPolicies; repeatable.",
)
@click.option(
    "--builtin-workloads",
    is_flag=True,
    help="Add the lab's default workload (sample1, sample2, cattle-monitoring-system pods).",
)
@click.option(
    "--node",
    "node_specs",
    multiple=True,
    required=True,
    metavar="NAME[=BRIDGE_ADDRESS[@NODE_IP]]",
    help="A lab node: its name, cni0's address/prefix (its pod subnet) and its address on the "
    "nodes' network (for flannel.1); repeatable, server first.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for lab.json and, per node, <node>/ipset.restore, iptables.rules, lab.json.",
)
@click.option(
    "--bridge-address",
    default=BRIDGE_ADDRESS,
    show_default=True,
    help="cni0's address/prefix for a --node given without one.",
)
@click.option("--netns-prefix", default="", help="Prefix of the pods' network namespace names.")
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=None,
    help="Seed of the sync's policy and pod orders (default: the one in --out's lab.json, "
    "else a new one).",
)
@click.option("--new-seed", is_flag=True, help="Draw a new seed (a new sync) unless --seed.")
@click.option(
    "--sync-version",
    default=None,
    help="Stands for kube-router's sync timestamp in chain names (default: the seed).",
)
@click.option(
    "--manifest-order",
    is_flag=True,
    help="Deviation: policy and pod jumps in manifest order instead of shuffled per sync.",
)
@click.option(
    "--pod-log-limit",
    default=None,
    metavar="N/UNIT",
    help="Deviation: the pod chains' NFLOG limit instead of kube-router's 10/minute.",
)
@click.option(
    "--pod-log-burst",
    type=int,
    default=None,
    help="Deviation: the pod chains' NFLOG burst instead of kube-router's 10.",
)
@click.option(
    "--icmp-ratelimit-lifted",
    is_flag=True,
    help="Record that the nodes' ICMP rate limits are lifted (a deviation lab.json lists).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def compile_command(
    files: tuple[Path, ...],
    builtin_workloads: bool,
    node_specs: tuple[str, ...],
    out_dir: Path,
    bridge_address: str,
    netns_prefix: str,
    seed: int | None,
    new_seed: bool,
    sync_version: str | None,
    manifest_order: bool,
    pod_log_limit: str | None,
    pod_log_burst: int | None,
    icmp_ratelimit_lifted: bool,
    as_json: bool,
) -> None:
    """Compile manifests into every lab node's ipsets and filter table, and lab.json.

    The seed decides the orders a kube-router sync takes from Go maps; it is kept in lab.json,
    so compiling again gives the same bytes (files are rewritten only when they change).
    Exit codes: 0 ok, 2 bad input (the message names the file and the field).
    """
    paths = list(files)
    if builtin_workloads:
        paths.append(BUILTIN_WORKLOADS)
    if not paths:
        raise usage_error("give at least one manifest with -f FILE, or --builtin-workloads")
    for path in paths:
        if not path.is_file():
            raise usage_error(f"{path}: no such file")
    log_limit = None
    if pod_log_limit is not None or pod_log_burst is not None:
        log_limit = LogLimit(
            pod_log_limit or DEFAULT_NFLOG_LIMIT,
            DEFAULT_NFLOG_BURST if pod_log_burst is None else pod_log_burst,
        )
    try:
        nodes = [parse_node_spec(spec, bridge_address) for spec in node_specs]
        if seed is None and not new_seed:
            seed = stored_seed(out_dir)
        cluster = load_manifests(paths)
        compiled = compile_cluster(
            cluster,
            nodes,
            seed=seed,
            netns_prefix=netns_prefix,
            sync_version=sync_version,
            manifest_order=manifest_order,
            pod_log_limit=log_limit,
            icmp_ratelimit_lifted=icmp_ratelimit_lifted,
        )
    except (ManifestError, LabError) as error:
        raise usage_error(str(error)) from error
    changed = write_compiled(compiled, out_dir)
    console = stderr_console()
    for warning in compiled.warnings:
        console.print(f"[yellow]warning[/yellow]: {warning}", markup=True, highlight=False)
    summary = {
        "out": str(out_dir),
        "changed": [str(path.relative_to(out_dir)) for path in changed],
        "seed": compiled.lab["seed"],
        "nodes": {node["name"]: len(node["pods"]) for node in compiled.lab["nodes"]},
        "pods": len(compiled.lab["pods"]),
        "probes": len(compiled.lab["probes"]),
        "deviations": [deviation["variable"] for deviation in compiled.lab["deviations"]],
        "warnings": list(compiled.warnings),
    }
    if as_json:
        emit_json(summary)
    else:
        state = f"wrote {', '.join(summary['changed'])}" if changed else "unchanged"
        click.echo(
            f"{out_dir}: {state} (seed {summary['seed']}, {len(nodes)} node(s), "
            f"{summary['pods']} pods, {summary['probes']} probes)"
        )


def _lab_options(params: dict[str, Any]) -> PlaybookOptions:
    options = PlaybookOptions.from_params(params)
    if options.inventory is None:
        options.inventory = project_root() / LAB_INVENTORY
    return options


def _run(command: str, playbooks: tuple[str, ...], params: dict[str, Any]) -> list[RunResult]:
    options = _lab_options(params)
    artifacts_dir = artifacts_dir_for(options, params.get("artifacts_dir"))
    return run_sequence(f"lab {command}", playbooks, options, artifacts_dir)


def _exit(
    command: str,
    params: dict[str, Any],
    results: list[RunResult],
    report: Any,
    details: dict[str, Any] | None = None,
) -> None:
    ok = all(result.ok for result in results)
    code = ExitCode.OK if ok else ExitCode.RUN_FAILED
    if ok and isinstance(report, dict) and not report.get("ok"):
        code = ExitCode.MISMATCH
    if params.get("as_json"):
        emit_json(
            {
                "command": f"lab {command}",
                "ok": code == ExitCode.OK,
                "exit_code": int(code),
                "runs": [result.to_dict() for result in results],
                "report": report,
                **(details or {}),
            }
        )
    click.get_current_context().exit(int(code))


_artifacts_option = click.option(
    "--artifacts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Controller-side artifacts directory (default: ${ARTIFACTS_DIR_ENV}, else ./artifacts).",
)


@lab.command("up")
@_artifacts_option
@playbook_options
def up_command(**params: Any) -> None:
    """Create the lab's node containers, install ulogd2, render the bundle, build the lab.

    Runs playbooks/lab_nodes.yml, ulogd.yml, policies.yml and lab.yml on inventory/lab.yml
    (or -i). Exit codes: 0 ok, 2 usage error, 3 run failed.
    """
    _exit("up", params, _run("up", UP_PLAYBOOKS, params), None)


@lab.command("verify")
@_artifacts_option
@playbook_options
def verify_command(**params: Any) -> None:
    """Probe every pod pair in the lab and check the drop logs (playbooks/verify.yml).

    Exit codes: 0 as expected and logged, 1 mismatch, 2 usage error, 3 run failed.
    """
    started = time.time()
    results = _run("verify", VERIFY_PLAYBOOKS, params)
    report = None
    if all(result.ok for result in results) and not params.get("check"):
        options = _lab_options(params)
        report_path = artifacts_dir_for(options, params.get("artifacts_dir")) / REPORT_NAME
        report = load_verify_report(report_path, not_before=started)
        if not params.get("as_json"):
            click.echo(json.dumps({"ok": report.get("ok"), "report": str(report_path)}))
    _exit("verify", params, results, report)


@lab.command("sync")
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=None,
    help="The sync's seed (default: a new random one); give back a seed a run printed.",
)
@_artifacts_option
@playbook_options
def sync_command(seed: int | None, **params: Any) -> None:
    """Run a kube-router sync on every lab node: recompile with a new seed (new jump orders
    and chain names) and reload every node's sets and rules atomically, which refills every
    log rule's rate-limit bucket (playbooks/lab.yml with netpol_lab_resync).

    Exit codes: 0 ok, 2 usage error, 3 run failed.
    """
    params["extra_vars"] = (
        *(params.get("extra_vars") or ()),
        json.dumps(
            {"netpol_lab_resync": True, "netpol_lab_sync_seed": "" if seed is None else seed}
        ),
    )
    results = _run("sync", SYNC_PLAYBOOKS, params)
    synced = None
    if all(result.ok for result in results) and not params.get("check"):
        options = _lab_options(params)
        lab_json = artifacts_dir_for(options, params.get("artifacts_dir")) / "lab" / LAB_FILE
        try:
            synced = read_sync_summary(lab_json)
        except LabError as error:
            raise usage_error(str(error)) from error
        if not params.get("as_json"):
            click.echo(f"seed {synced['seed']} ({lab_json})")
    _exit("sync", params, results, None, {"sync": synced})


@lab.command("down")
@_artifacts_option
@playbook_options
def down_command(**params: Any) -> None:
    """Remove the lab's node containers (playbooks/lab_down.yml).

    Exit codes: 0 ok, 2 usage error, 3 run failed.
    """
    _exit("down", params, _run("down", DOWN_PLAYBOOKS, params), None)
