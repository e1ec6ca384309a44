#!/usr/bin/env bash
# Runs every benchmark; each prints its own figures and asserts nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for bench in benchmarks/bench_*.py; do
  echo "==> $bench"
  python "$bench"
done
