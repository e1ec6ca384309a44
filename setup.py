"""Build hooks: the optional C field splitter of `k3s-netpol logs` (pure Python without it), and
a copy of the Ansible project (site.yml, ansible.cfg, playbooks, roles, inventory) inside the
package at k3s_netpol/data/project, where runner.project_root() finds it when no checkout is
around. The copy is made in the build directory only; the checkout keeps one copy of each file.
MANIFEST.in puts the same paths in the sdist, so a wheel built from the sdist is complete."""

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

PROJECT_PATHS = ("site.yml", "ansible.cfg", "playbooks", "roles", "inventory")
PACKAGED_PROJECT = Path("k3s_netpol", "data", "project")
SOURCE_ROOT = Path(__file__).resolve().parent


def project_files() -> list[Path]:
    """The files under PROJECT_PATHS, relative to the source root, without Python caches."""
    files: list[Path] = []
    for name in PROJECT_PATHS:
        path = SOURCE_ROOT / name
        if not path.exists():
            raise FileNotFoundError(f"{path}: the packaged Ansible project needs it")
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        files.extend(
            candidate.relative_to(SOURCE_ROOT)
            for candidate in candidates
            if candidate.is_file()
            and "__pycache__" not in candidate.parts
            and candidate.suffix not in (".pyc", ".pyo")
        )
    return files


class BuildPyWithProject(build_py):
    """build_py, plus the Ansible project copied to k3s_netpol/data/project in the build dir.
    Editable installs skip it: runner.project_root() finds the checkout itself."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for target, source in self._project_mapping():
            self.mkpath(str(Path(target).parent))
            self.copy_file(source, target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return [*outputs, *(target for target, _ in self._project_mapping())]

    def _project_mapping(self) -> list[tuple[str, str]]:
        packaged = Path(self.build_lib, PACKAGED_PROJECT)
        return [(str(packaged / file), str(SOURCE_ROOT / file)) for file in project_files()]


setup(
    cmdclass={"build_py": BuildPyWithProject},
    ext_modules=[
        Extension(
            "k3s_netpol._logemu",
            sources=["src/k3s_netpol/_logemu.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
        )
    ],
)
