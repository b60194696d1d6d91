#!/usr/bin/env bash
# Helpers shared by the recipes. Source after parse_options.sh.

# run_stage N "description": true when stage N is inside [--stage, --stop-stage]; prints a banner.
run_stage() {
  local n=$1; shift
  if [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ]; then
    echo "==== stage $n: $* ($(date -u +%H:%M:%S)) ====" >&2
    _stage_start=$(date +%s)
    return 0
  fi
  return 1
}

# stage_done N: logs the stage's wall time to exp/stage_times (one line per run of a stage).
stage_done() {
  local n=$1 secs=$(( $(date +%s) - _stage_start ))
  mkdir -p exp
  echo "stage $n ${secs}s $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> exp/stage_times
  echo "==== stage $n done in ${secs}s ====" >&2
}
