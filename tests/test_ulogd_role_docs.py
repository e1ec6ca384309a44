"""The ulogd2 role's variables: each default is specified, documented and in the README."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[1] / "roles" / "ulogd2"


def defaults() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    return loaded


def specified() -> dict[str, dict[str, object]]:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options: dict[str, dict[str, object]] = specs["argument_specs"]["main"]["options"]
    return options


def test_defaults_and_argument_specs_name_the_same_variables():
    assert set(defaults()) == set(specified())


def test_every_variable_is_prefixed():
    assert all(name.startswith("ulogd2_") for name in defaults())


def test_specified_defaults_match_the_role_defaults():
    for name, value in defaults().items():
        if isinstance(value, str) and "{{" in value:
            continue
        spec_default = specified()[name].get("default")
        assert spec_default == value, name


def test_every_default_has_a_comment_above_it():
    lines = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^ulogd2_\w+:", line):
            assert lines[index - 1].startswith("# "), line


def test_readme_table_lists_every_variable():
    readme = (ROLE / "README.md").read_text()
    documented = set(re.findall(r"^\| `(ulogd2_\w+)` \|", readme, flags=re.MULTILINE))
    assert documented == set(defaults())
