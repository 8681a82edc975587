#!/usr/bin/env bash
# All the tests, every tier, as CI runs them: unit and integration one after the
# other, then the vm tier on two workers (each qemu guest runs on one core under
# TCG, so two boots at once take about the time of one). Every tier runs even when
# an earlier one failed; the exit status is non-zero if any tier failed.
# Extra arguments go to both pytest runs (e.g. -x, --lf).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
.venv/bin/pytest tests/unit tests/integration "$@" || status=$?
workers=$(( $(nproc) < 2 ? 1 : 2 ))
.venv/bin/pytest tests/vm -n "$workers" "$@" || status=$?
exit "$status"
