"""The ulogd2 role's templates, rendered without a node: every stack loads its plugins."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

ROLE = Path(__file__).resolve().parents[1] / "roles" / "ulogd2"
PLUGIN_DIR = "/usr/lib/x86_64-linux-gnu/ulogd"
PLUGIN_KINDS = {
    "NFLOG": "inppkt",
    "BASE": "raw2packet",
    "IFINDEX": "filter",
    "IP2STR": "filter",
    "PRINTPKT": "filter",
    "HWHDR": "filter",
    "LOGEMU": "output",
    "JSON": "output",
}


def role_defaults(**overrides: Any) -> dict[str, Any]:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    values = {**defaults, **overrides}
    log_dir = values["ulogd2_log_dir"]
    for name in ("ulogd2_logemu_file", "ulogd2_json_file"):
        values[name] = values[name].replace("{{ ulogd2_log_dir }}", log_dir)
    files = []
    if "logemu" in values["ulogd2_outputs"]:
        files.append(values["ulogd2_logemu_file"])
    if "json" in values["ulogd2_outputs"]:
        files.append(values["ulogd2_json_file"])
    return {
        **values,
        "ansible_managed": "Ansible managed",
        "__ulogd2_plugin_dir": PLUGIN_DIR,
        "__ulogd2_log_files": files,
        "__ulogd2_user": "ulog",
        "__ulogd2_log_group": "adm",
        "__ulogd2_service_name": "ulogd2",
    }


def render(template: str, **overrides: Any) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template(template).render(role_defaults(**overrides))


def sections(config: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    current = parsed.setdefault("", [])
    for raw in config.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            current = parsed.setdefault(header.group(1), [])
        else:
            current.append(line)
    return parsed


@pytest.mark.parametrize("outputs", [["logemu"], ["json"], ["logemu", "json"], ["json", "logemu"]])
def test_every_stack_element_has_its_plugin_loaded(outputs):
    parsed = sections(render("ulogd.conf.j2", ulogd2_outputs=outputs))
    global_lines = parsed["global"]
    plugins = {line for line in global_lines if line.startswith("plugin=")}
    stacks = [line.removeprefix("stack=") for line in global_lines if line.startswith("stack=")]
    assert len(stacks) == len(outputs)
    for stack in stacks:
        for element in stack.split(","):
            instance, plugin = element.split(":")
            assert f'plugin="{PLUGIN_DIR}/ulogd_{PLUGIN_KINDS[plugin]}_{plugin}.so"' in plugins
            if PLUGIN_KINDS[plugin] in ("inppkt", "output"):
                assert instance in parsed, f"no [{instance}] section for {plugin}"
    assert all(stack.startswith("log1:NFLOG,") for stack in stacks)
    assert ("emu1" in parsed) == ("logemu" in outputs)
    assert ("json1" in parsed) == ("json" in outputs)


def test_default_config_is_the_tutorial_stack_on_group_100():
    parsed = sections(render("ulogd.conf.j2"))
    assert (
        "stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU"
        in (parsed["global"])
    )
    assert parsed["log1"] == ["group=100"]
    assert parsed["emu1"] == ['file="/var/log/ulog/syslogemu.log"', "sync=1"]


def test_group_and_queue_threshold_are_written_under_log1():
    parsed = sections(render("ulogd.conf.j2", ulogd2_nflog_group=7, ulogd2_netlink_qthreshold=1))
    assert parsed["log1"] == ["group=7", "netlink_qthreshold=1"]


def test_logrotate_rotates_each_output_file_by_size_and_signals_the_main_process():
    text = render(
        "logrotate.j2",
        ulogd2_outputs=["logemu", "json"],
        ulogd2_logrotate_size="10M",
        ulogd2_logrotate_rotate=3,
    )
    assert text.count("{") == text.count("}") == 1
    assert "/var/log/ulog/syslogemu.log /var/log/ulog/ulogd.json {" in text
    for directive in ("size 10M", "rotate 3", "create 0640 ulog adm", "delaycompress"):
        assert re.search(rf"^\s+{re.escape(directive)}$", text, flags=re.MULTILINE), directive
    assert "systemctl kill --kill-who=main --signal=SIGHUP ulogd2.service" in text


def test_logrotate_without_compression():
    text = render("logrotate.j2", ulogd2_logrotate_compress=False)
    assert "compress" not in text


def test_systemd_drop_in_restarts_on_failure():
    text = render("systemd-override.conf.j2")
    assert "Restart=on-failure" in text.splitlines()
    assert "RestartSec=2" in text.splitlines()
