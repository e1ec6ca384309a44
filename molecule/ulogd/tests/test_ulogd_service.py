"""The ulogd2 role's result on a systemd node: package, service, files, and real NFLOG logging."""

from __future__ import annotations

import re

import pytest
from ulogd_probe import (
    JSON_FILE,
    LOGEMU_FILE,
    json_records,
    logemu_lines,
    poll,
)


@pytest.mark.parametrize("package", ["ulogd2", "ulogd2-json", "logrotate"])
def test_packages_are_installed(host, package):
    assert host.package(package).is_installed


def test_service_is_enabled_and_running_as_ulog(host):
    service = host.service("ulogd2")
    assert service.is_enabled
    assert service.is_running
    process = host.process.get(comm="ulogd")
    assert process.user == "ulog"


def test_config_listens_on_group_100_with_both_stacks(host):
    config = host.file("/etc/ulogd.conf")
    assert config.user == "root"
    assert config.mode == 0o644
    text = config.content_string
    plugin_dir = "/usr/lib/x86_64-linux-gnu/ulogd"
    if host.system_info.arch == "aarch64":
        plugin_dir = "/usr/lib/aarch64-linux-gnu/ulogd"
    for plugin in ("inppkt_NFLOG", "raw2packet_BASE", "filter_PRINTPKT", "output_LOGEMU"):
        assert f'plugin="{plugin_dir}/ulogd_{plugin}.so"' in text
        assert host.file(f"{plugin_dir}/ulogd_{plugin}.so").exists
    stacks = re.findall(r"^stack=(.*)$", text, flags=re.MULTILINE)
    assert stacks == [
        "log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU",
        "log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,mac2str1:HWHDR,json1:JSON",
    ]
    log1 = text.split("[log1]", 1)[1].split("[", 1)[0].split()
    assert log1 == ["group=100", "netlink_qthreshold=1"]
    assert f'[emu1]\nfile="{LOGEMU_FILE}"\nsync=1' in text
    assert f'[json1]\nfile="{JSON_FILE}"\nsync=1' in text


def test_previous_config_was_backed_up(host):
    backups = host.check_output("find /etc -maxdepth 1 -name 'ulogd.conf.*~'").split()
    assert backups, "no backup of the packaged /etc/ulogd.conf"
    packaged = [path for path in backups if "group=0" in host.file(path).content_string]
    assert packaged, "no backup holds the packaged config (NFLOG group 0)"


def test_log_directory_and_files_belong_to_ulog(host):
    directory = host.file("/var/log/ulog")
    assert directory.is_directory
    assert (directory.user, directory.group, directory.mode) == ("ulog", "adm", 0o750)
    for path in (LOGEMU_FILE, JSON_FILE):
        log_file = host.file(path)
        assert (log_file.user, log_file.group, log_file.mode) == ("ulog", "adm", 0o640)


def test_logrotate_config_bounds_size_and_count(host):
    text = host.file("/etc/logrotate.d/ulogd2").content_string
    assert f"{LOGEMU_FILE} {JSON_FILE} {{" in text
    for directive in ("size 50M", "rotate 5", "create 0640 ulog adm", "--signal=SIGHUP"):
        assert directive in text
    host.run_expect([0], "logrotate --debug /etc/logrotate.d/ulogd2")


def test_systemd_restarts_ulogd2_when_it_dies(host):
    def main_pid() -> int:
        return int(host.check_output("systemctl show --property=MainPID --value ulogd2"))

    assert host.check_output("systemctl show --property=Restart --value ulogd2") == "on-failure"
    killed = main_pid()
    assert killed > 0
    host.run_expect([0], f"kill -KILL {killed}")

    def restarted() -> bool:
        """ulogd2 running again under a new PID"""
        pid = main_pid()
        return pid not in (0, killed) and host.service("ulogd2").is_running

    poll(restarted, timeout=30)


def test_blocked_connection_is_logged_as_logemu_and_json(host, connect_blocked):
    connection = connect_blocked()

    def logemu_line() -> list[str]:
        """a LOGEMU line for the blocked connection"""
        return [line for line in logemu_lines(host) if connection.matches_logemu(line)]

    def json_record() -> list[dict]:
        """a JSON record for the blocked connection"""
        return [record for record in json_records(host) if connection.matches_json(record)]

    line = poll(logemu_line)[0]
    assert " SYN " in line
    record = poll(json_record)[0]
    assert record["tcp.syn"] == 1


def test_rotation_reopens_the_files_without_losing_lines(host, connect_blocked):
    before = connect_blocked()
    poll(lambda: any(before.matches_logemu(line) for line in logemu_lines(host)))
    poll(lambda: any(before.matches_json(record) for record in json_records(host)))

    host.run_expect(
        [0], "logrotate --force --state /run/ulogd2-verify.state /etc/logrotate.d/ulogd2"
    )
    assert any(before.matches_logemu(line) for line in logemu_lines(host, LOGEMU_FILE + ".1"))
    assert any(before.matches_json(record) for record in json_records(host, JSON_FILE + ".1"))
    for path in (LOGEMU_FILE, JSON_FILE):
        recreated = host.file(path)
        assert (recreated.user, recreated.group, recreated.mode) == ("ulog", "adm", 0o640)

    after = connect_blocked()
    poll(lambda: any(after.matches_logemu(line) for line in logemu_lines(host)))
    poll(lambda: any(after.matches_json(record) for record in json_records(host)))
