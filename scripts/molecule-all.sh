#!/usr/bin/env bash
# Runs `molecule test` for every scenario under molecule/. A scenario that needs something this
# machine may not have ships an executable `molecule/<name>/available`: when it exits non-zero,
# the scenario is skipped and its output (which names what is missing) is printed as SKIPPED.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scenarios=("$@")
if ((${#scenarios[@]} == 0)); then
  for dir in molecule/*/; do
    [[ -f "$dir/molecule.yml" ]] && scenarios+=("$(basename "$dir")")
  done
fi

passed=0 failed=0 skipped=0
for scenario in "${scenarios[@]}"; do
  check="molecule/$scenario/available"
  if [[ -x "$check" ]] && ! reason=$("$check" 2>&1); then
    echo "SKIPPED molecule scenario '$scenario': $reason"
    skipped=$((skipped + 1))
    continue
  fi
  # As a user types it: `molecule test` for the default scenario, `-s NAME` for the others, in
  # an environment without the podman, Ansible or artifacts variables (each scenario sets its own).
  command=(molecule test)
  [[ "$scenario" == default ]] || command+=(-s "$scenario")
  echo "==> ${command[*]}"
  if env -u CONTAINERS_CONF -u ANSIBLE_CONFIG -u ANSIBLE_ROLES_PATH -u K3S_NETPOL_ARTIFACTS_DIR \
    "${command[@]}"; then
    passed=$((passed + 1))
  else
    echo "FAILED molecule scenario '$scenario'"
    failed=$((failed + 1))
  fi
done
echo "molecule: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
