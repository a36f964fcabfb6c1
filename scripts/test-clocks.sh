#!/usr/bin/env bash
# The unit tests under shifted process clocks (libfaketime moves the real clock of the process and its
# workers; nothing is mocked): 400 days ahead, 30 s after the next New Year's midnight UTC, and noon
# of the next leap day. Any test that pairs a literal date with the clock fails one of these.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export TZ=UTC

year=$(date -u +%Y)
leap=$((year + 1))
while ! { [ $((leap % 4)) -eq 0 ] && { [ $((leap % 100)) -ne 0 ] || [ $((leap % 400)) -eq 0 ]; }; }; do
  leap=$((leap + 1))
done
today=$(date -u +%F)

run() {  # run CLOCK EXPECTED-DATE-PREFIX|"not:<date>"
  local clock=$1 expect=$2 seen
  seen=$(faketime -f "$clock" "$PY" -c 'import datetime; print(datetime.datetime.now(datetime.UTC).isoformat())')
  case "$expect" in
    not:*) [ "${seen:0:10}" != "${expect#not:}" ] ;;
    *) [ "${seen:0:${#expect}}" = "$expect" ] ;;
  esac || { echo "test-clocks: faketime '$clock' did not shift the clock (python saw $seen)" >&2; exit 1; }
  echo "== unit tests with the clock at $seen (faketime '$clock')"
  faketime -f "$clock" "$PY" -m pytest wap_pipeline_tests/unit -n 2 -q -p no:cacheprovider
}

run "+400d" "not:$today"
run "@$((year + 1))-01-01 00:00:30" "$((year + 1))-01-01T00:00:3"
run "@$leap-02-29 12:00:00" "$leap-02-29T12:00"
