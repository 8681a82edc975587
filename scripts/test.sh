#!/usr/bin/env bash
# All the tests, every tier, as CI runs it: unit and integration side by side (the unit
# tier touches no disk or device and mostly computes; the integration tier mostly waits for
# loop devices, mkfs and sync), then the vm tier on two workers (each qemu guest runs on
# one core under TCG, so two boots at once take about the time of one). Every tier runs
# even when another failed; the exit status is non-zero if any tier failed.
# Extra arguments go to every pytest run (e.g. -x, --lf).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
unit_log=$(mktemp /tmp/rescue-unit-tier.XXXXXX)
.venv/bin/pytest tests/unit "$@" >"$unit_log" 2>&1 &
unit=$!
.venv/bin/pytest tests/integration "$@" || status=$?
wait "$unit" || status=$?
echo "---- the unit tier (it ran beside the integration tier) ----"
cat "$unit_log"
rm -f "$unit_log"
workers=$(( $(nproc) < 2 ? 1 : 2 ))
.venv/bin/pytest tests/vm -n "$workers" "$@" || status=$?
exit "$status"
