#!/usr/bin/env bash
# Prepare a corpus into a validated Kaldi data directory with its evaluation folds, then print
# the leakage check's verdict. Recipes call it in their data stage:
#
#   local/prepare_data.sh [--exp 1] [--protocol auto] [--folds 5] [--seed 0] [--force false] \
#       [--labels MAP] CORPUS SRC_DIR DATA_DIR
#
# --labels MAP: the emotion label map of `sertool prepare --labels` (lines 'name code').
#
# Idempotent: when DATA_DIR was prepared with the same arguments and still validates, nothing is
# redone (--force true redoes it). Files that could not be used are listed in DATA_DIR/skipped.
set -euo pipefail

exp=1
protocol=auto
folds=5
seed=0
force=false
labels=""

. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

if [ $# -ne 3 ]; then
  echo "usage: $0 [--exp N] [--protocol P] [--folds K] [--seed S] [--force true] [--labels MAP] CORPUS SRC_DIR DATA_DIR" >&2
  exit 1
fi
corpus=$1 src=$2 data=$3
args="$corpus $(realpath -m "$src") exp=$exp protocol=$protocol folds=$folds seed=$seed"
label_args=()
if [ -n "$labels" ]; then  # the map's content counts: an edited map prepares again
  args="$args labels=$(realpath -m "$labels"):$(sha256sum < "$labels" | cut -c1-16)"
  label_args=(--labels "$labels")
fi

if [ "$force" != true ] && [ -f "$data/.prepare_args" ] \
    && [ "$(cat "$data/.prepare_args")" = "$args" ] \
    && sertool validate-data-dir "$data" >/dev/null 2>&1; then
  echo "$0: $data already prepared ($args); --force true to redo" >&2
else
  sertool prepare "$corpus" "$src" "$data" --exp "$exp" --protocol "$protocol" \
    --folds "$folds" --seed "$seed" "${label_args[@]}"
  echo "$args" > "$data/.prepare_args"
fi

if [ -f "$data/folds/protocol.json" ]; then
  sertool check-folds "$data" | head -n 1
fi
