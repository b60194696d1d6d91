#!/usr/bin/env bash
# Helpers shared by the recipes. Source after parse_options.sh.

# run_stage N "description": true when stage N is inside [--stage, --stop-stage]; prints a banner.
# What the stage prints (stdout and stderr) goes to the terminal and to exp/log/stageN.log
# (appended, one banner per run), until stage_done N.
run_stage() {
  local n=$1; shift
  if [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ]; then
    mkdir -p exp/log
    exec 3>&1 4>&2  # the terminal, restored by stage_done
    exec > >(tee -a "exp/log/stage$n.log") 2>&1
    echo "==== stage $n: $* ($(date -u +%H:%M:%S)) ===="
    _stage_start=$(date +%s)
    return 0
  fi
  return 1
}

# stage_done N: logs the stage's wall time to exp/stage_times (one line per run of a stage).
stage_done() {
  local n=$1 secs=$(( $(date +%s) - _stage_start ))
  echo "stage $n ${secs}s $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> exp/stage_times
  echo "==== stage $n done in ${secs}s ===="
  exec 1>&3 2>&4 3>&- 4>&-
}
