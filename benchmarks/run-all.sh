#!/usr/bin/env bash
# Runs every benchmark; each prints its own figures and asserts nothing.
# bench_faults.py builds a container and netns: it runs under the machine-wide lock.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for bench in benchmarks/bench_*.py; do
  echo "==> $bench"
  case "$bench" in
    */bench_faults.py) flock /tmp/k3s-netpol-root.lock python "$bench" ;;
    *) python "$bench" ;;
  esac
done
