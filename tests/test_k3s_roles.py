"""Static contracts of the k3s roles: every default documented and validated, plays ordered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLES = ["k3s", "k3s_reset"]


def defaults_of(role: str) -> dict[str, object]:
    return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())


def spec_options(role: str) -> dict[str, dict[str, object]]:
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_validated_and_every_option_has_a_default(role: str) -> None:
    assert set(defaults_of(role)) == set(spec_options(role))


@pytest.mark.parametrize("role", ROLES)
def test_every_default_has_a_comment_above_it(role: str) -> None:
    lines = (ROOT / "roles" / role / "defaults" / "main.yml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z_0-9]+:", line):
            above = next(text for text in reversed(lines[:number]) if text.strip())
            assert above.startswith("#") or re.match(r"^[a-z_0-9]+:", above), line


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_documented_in_the_readme(role: str) -> None:
    readme = (ROOT / "roles" / role / "README.md").read_text()
    for name in defaults_of(role):
        assert f"`{name}`" in readme, name


def test_token_is_never_logged_by_argument_validation() -> None:
    assert spec_options("k3s")["k3s_token"].get("no_log") is True


def test_preflight_runs_on_every_node_before_servers_then_agents() -> None:
    plays = yaml.safe_load((ROOT / "playbooks" / "k3s.yml").read_text())
    assert [play["hosts"] for play in plays] == ["k3s_cluster", "server", "agent"]
    assert plays[0]["any_errors_fatal"] is True
    assert plays[0]["tasks"][0]["ansible.builtin.include_role"]["tasks_from"] == "preflight"
    assert plays[1]["serial"] == 1


def test_architecture_names_match_the_release_files() -> None:
    variables = yaml.safe_load((ROOT / "roles" / "k3s" / "vars" / "main.yml").read_text())
    architectures = variables["__k3s_architectures"]
    assert architectures["x86_64"] == {"arch": "amd64", "binary": "k3s"}
    assert architectures["aarch64"] == {"arch": "arm64", "binary": "k3s-arm64"}
    assert architectures["armv7l"] == {"arch": "arm", "binary": "k3s-armhf"}


def tasks_in(tasks: list[dict[str, object]]) -> list[dict[str, object]]:
    """The tasks of a task list, those inside blocks included."""
    flat = []
    for task in tasks:
        flat.append(task)
        for section in ("block", "rescue", "always"):
            nested = task.get(section)
            if isinstance(nested, list):
                flat.extend(tasks_in(nested))
    return flat


def kubectl_tasks() -> list[tuple[str, object]]:
    """(file, command) of every command/shell task in the roles whose command mentions kubectl."""
    found = []
    for path in sorted((ROOT / "roles").glob("*/tasks/*.yml")):
        for task in tasks_in(yaml.safe_load(path.read_text()) or []):
            for module in ("ansible.builtin.command", "ansible.builtin.shell"):
                if module in task and "kubectl" in str(task[module]):
                    found.append((f"{path.relative_to(ROOT)}: {task['name']}", task[module]))
    return found


def test_kubectl_is_always_given_an_argument_list() -> None:
    # The command module splits a string on shell rules and drops quotes: a jsonpath such as
    # {.status.conditions[?(@.type=="Ready")]} reached kubectl without them (issue 9).
    tasks = kubectl_tasks()
    assert tasks, "no kubectl task found: the scan is broken"
    for name, command in tasks:
        assert isinstance(command, dict), f"{name}: kubectl must be given `argv`, not a string"
        assert "argv" in command, f"{name}: kubectl must be given `argv`"
