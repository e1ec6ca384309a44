#!/usr/bin/env bash
# Runs every benchmark; each prints its own figures and asserts nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The benchmarks that start containers call podman directly: give it the project's settings.
if [[ -z "${CONTAINERS_CONF:-}" && -f .cache/containers.conf ]]; then
  export CONTAINERS_CONF=$PWD/.cache/containers.conf
fi
for bench in benchmarks/bench_*.py; do
  echo "==> $bench"
  python "$bench"
done
