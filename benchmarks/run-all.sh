#!/usr/bin/env bash
# Runs every benchmark; each prints its own figures and asserts nothing.
# bench_faults.py builds a container and netns: it runs under the machine-wide lock.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The benchmarks that start containers call podman directly: give it the project's settings.
if [[ -z "${CONTAINERS_CONF:-}" && -f .cache/containers.conf ]]; then
  export CONTAINERS_CONF=$PWD/.cache/containers.conf
fi
for bench in benchmarks/bench_*.py; do
  echo "==> $bench"
  case "$bench" in
    */bench_faults.py) flock /tmp/k3s-netpol-root.lock python "$bench" ;;
    *) python "$bench" ;;
  esac
done
