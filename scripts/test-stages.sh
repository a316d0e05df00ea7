#!/usr/bin/env bash
# Runs every test stage in order and prints how long each took, so the CI budget stays visible.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTEST=("$VENV/bin/pytest" -q -p no:cacheprovider)

declare -a NAMES TIMES RESULTS
failed=0

stage() {
  local name=$1; shift
  local start end rc
  echo "=== stage: $name"
  start=$(date +%s%N)
  if [ -n "${STAGE_DIR:-}" ] && [ ! -d "$STAGE_DIR" ]; then
    echo "(no tests in $STAGE_DIR yet)"
    rc=0
  else
    "$@"
    rc=$?
  fi
  # pytest exits 5 when a stage has no tests yet; that is not a failure of the stage.
  [ "$rc" -eq 5 ] && rc=0
  end=$(date +%s%N)
  NAMES+=("$name"); TIMES+=("$(( (end - start) / 1000000000 )).$(( (end - start) / 100000000 % 10 ))"); RESULTS+=("$rc")
  [ "$rc" -ne 0 ] && failed=1
}

stage lint "$VENV/bin/ruff" check src tests benchmarks
stage format "$VENV/bin/ruff" format --check src tests benchmarks
stage typecheck "$VENV/bin/mypy"
stage unit "${PYTEST[@]}" tests --ignore=tests/api --ignore=tests/conformance --ignore=tests/ui --ignore=tests/spark
STAGE_DIR=tests/conformance stage conformance "${PYTEST[@]}" tests/conformance
STAGE_DIR=tests/api stage api "${PYTEST[@]}" tests/api
STAGE_DIR=tests/ui stage browser "${PYTEST[@]}" tests/ui
STAGE_DIR=tests/spark stage spark "${PYTEST[@]}" tests/spark

echo
echo "stage          seconds  result"
for i in "${!NAMES[@]}"; do
  printf '%-14s %7s  %s\n' "${NAMES[$i]}" "${TIMES[$i]}" "$([ "${RESULTS[$i]}" -eq 0 ] && echo ok || echo "FAILED (${RESULTS[$i]})")"
done
exit $failed
