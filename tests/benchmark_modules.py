"""The benchmark scripts' data generators, loaded for tests that reuse their synthetic logs."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@cache
def bench_logs() -> ModuleType:
    return _load("bench_logs")


@cache
def bench_expect() -> ModuleType:
    return _load("bench_expect")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
