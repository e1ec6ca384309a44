"""Build hook: the optional C field splitter of `k3s-netpol logs` (pure Python without it)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "k3s_netpol._logemu",
            sources=["src/k3s_netpol/_logemu.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
        )
    ]
)
