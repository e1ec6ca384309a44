"""An installed package, away from any checkout, carries the Ansible project and finds it.

The wheel is built the way `python -m build` does it, from the sdist, so a file missing from
MANIFEST.in fails here too: a copy of the checkout's sources (no egg-info, whose SOURCES.txt
would carry files from an earlier build into the sdist; no build output), its sdist (setuptools'
PEP 517 backend), then `pip wheel --no-deps --no-build-isolation --no-index` with the venv's
setuptools (requirements.txt pins one new enough for pyproject.toml's build-system, so nothing is
downloaded), then `pip install --target DIR`.
Every check runs in a fresh interpreter with PYTHONPATH=DIR and a working directory outside the
checkout, without the Makefile's ANSIBLE_* and K3S_NETPOL_* variables, which point at the
checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT_PATHS = ("site.yml", "ansible.cfg", "playbooks", "roles", "inventory")
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", ".cache", ".ansible", ".*_cache", ".benchmarks", "artifacts", "reports",
    "build", "dist", "*.egg-info", "__pycache__", "*.py[cod]", "*.so",
)  # fmt: skip
BUILD_BACKEND_MINIMUM = (77,)


def _setuptools_version() -> tuple[int, ...]:
    return tuple(int(part) for part in version("setuptools").split(".")[:2] if part.isdigit())


pytestmark = pytest.mark.skipif(
    _setuptools_version() < BUILD_BACKEND_MINIMUM,
    reason=f"the venv's setuptools {version('setuptools')} is older than the 77 that "
    "pyproject.toml's build-system needs, so no wheel can be built without downloading one: "
    "run scripts/setup.sh to install requirements.txt's pin",
)


def clean_environment(**extra: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ANSIBLE_", "K3S_NETPOL_")) and key != "PYTHONPATH"
    }
    environment["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    environment.update(extra)
    return environment


def run(command: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        command,
        cwd=cwd,
        env=clean_environment(**extra),
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, f"{command}\n{completed.stdout}\n{completed.stderr}"
    return completed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR, where the wheel built from the sdist is installed with `pip install --target DIR`."""
    work = tmp_path_factory.mktemp("packaging")
    sources = work / "sources"
    shutil.copytree(ROOT, sources, ignore=NOT_SOURCES)
    dist = work / "dist"
    build_sdist = f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"
    run([sys.executable, "-c", build_sdist], cwd=sources)
    (sdist,) = dist.glob("k3s_netpol-*.tar.gz")
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist),
         str(sdist)], cwd=work)  # fmt: skip
    (wheel,) = dist.glob("k3s_netpol-*.whl")
    target = work / "site"
    run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], cwd=work)
    return target


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory with no project in it."""
    assert not (tmp_path / "site.yml").exists()
    return tmp_path


def packaged_project(installed: Path) -> Path:
    return installed / "k3s_netpol" / "data" / "project"


def in_installed_package(installed: Path, cwd: Path, script: str) -> str:
    completed = run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, PYTHONPATH=str(installed)
    )
    return completed.stdout


def files_under(directory: Path, names: tuple[str, ...] = ()) -> list[str]:
    """Relative paths of the files under directory (only under `names` if given), without
    Python caches (pip install byte-compiles the roles' helper scripts)."""
    tops = [directory / name for name in names] or [directory]
    return sorted(
        str(path.relative_to(directory))
        for top in tops
        for path in ([top] if top.is_file() else top.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def test_the_wheel_carries_every_file_of_the_ansible_project(installed: Path):
    packaged = files_under(packaged_project(installed))
    assert packaged == files_under(ROOT, PROJECT_PATHS)
    assert {"site.yml", "ansible.cfg", "inventory/group_vars/lab.yml"} <= set(packaged)
    assert not (ROOT / "src" / "k3s_netpol" / "data" / "project").exists()


def test_the_installed_package_finds_its_own_project(installed: Path, outside: Path):
    output = in_installed_package(
        installed,
        outside,
        """
        import json
        import k3s_netpol
        from k3s_netpol import runner
        print(json.dumps({
            "package": k3s_netpol.__file__,
            "project": str(runner.project_root()),
            "playbook": str(runner.resolve_playbook("playbooks/verify.yml")),
            "artifacts": str(runner.default_artifacts_dir()),
        }))
        """,
    )
    found = json.loads(output)
    project = packaged_project(installed)
    assert Path(found["package"]) == installed / "k3s_netpol" / "__init__.py"
    assert Path(found["project"]) == project
    assert Path(found["playbook"]) == project / "playbooks" / "verify.yml"
    assert Path(found["artifacts"]) == outside / "artifacts"


def test_site_yml_passes_the_syntax_check_in_the_packaged_project(installed: Path):
    project = packaged_project(installed)
    completed = run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "site.yml"],
        cwd=project,
        ANSIBLE_CONFIG=str(project / "ansible.cfg"),
    )
    assert "playbook: site.yml" in completed.stdout


def test_ansible_cfg_paths_resolve_beside_the_packaged_copy(installed: Path, outside: Path):
    project = packaged_project(installed)
    config = str(project / "ansible.cfg")
    dump = run(
        [str(BIN / "ansible-config"), "dump", "--only-changed"], cwd=outside, ANSIBLE_CONFIG=config
    ).stdout
    assert f"DEFAULT_ROLES_PATH({config}) = ['{project / 'roles'}']" in dump
    assert f"DEFAULT_HOST_LIST({config}) = ['{project / 'inventory' / 'lab.yml'}']" in dump
    host = run(
        [str(BIN / "ansible-inventory"), "--host", "k3s-netpol-lab-server"],
        cwd=outside,
        ANSIBLE_CONFIG=config,
    ).stdout
    lab_node = json.loads(host)
    assert lab_node["ulogd2_netlink_qthreshold"] == 1  # inventory/group_vars/lab.yml
    assert lab_node["netpol_bundle_nflog_limit"] == "600/minute"  # inventory/lab.yml


def test_run_playbook_runs_a_packaged_playbook(installed: Path, outside: Path):
    output = in_installed_package(
        installed,
        outside,
        f"""
        import json
        from k3s_netpol.runner import run_playbook
        local = {{"ansible_connection": "local", "ansible_python_interpreter": {sys.executable!r}}}
        result = run_playbook(
            "playbooks/lab_down.yml", inventory={{"all": {{"hosts": {{"localhost": local}}}}}}
        )
        print(json.dumps(result.to_dict()))
        """,
    )
    result = json.loads(output)
    assert result["ok"], result
    assert Path(result["playbook"]) == packaged_project(installed) / "playbooks" / "lab_down.yml"
    assert result["stats"]["localhost"]["failed"] == 0
