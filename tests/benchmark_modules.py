"""The benchmark scripts' data generators, loaded for tests that reuse their synthetic logs."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@cache
def bench_logs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_logs", BENCHMARKS / "bench_logs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
