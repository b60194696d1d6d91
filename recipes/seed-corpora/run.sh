#!/usr/bin/env bash
# Lee & Nadeem (2025): MFCC + 1D-CNN with channel and spatial attention, waveform augmentation
# (Gaussian noise, pitch shift), on EMO-DB, CREMA-D, TESS, SAVEE, EMOVO and RAVDESS.
#
# Speaker-independent folds by default (each corpus's own protocol, see `sertool prepare --help`).
# --split random reproduces the paper's own protocol, one random 80/20 utterance split: the same
# speakers (and, in TESS/SAVEE/EMOVO, the same sentences) are then on both sides, and every report
# says so in its first line. Running both shows how much of the published number is leakage.
#
#   0 data dirs   1 MFCC features   2 1D-CNN per fold   3 scores
#   4 cross-corpus matrix (two or more corpora found): the same system trained on every utterance
#     of one corpus, tested on every utterance of each other one (their shared classes), and the
#     train x test matrix of UA with the stage-2 fold runs on its diagonal
#
# A corpus whose path does not exist is skipped with a message.
# Usage: ./run.sh [--split speaker|random] [--corpora "emodb tess"] [--emodb DIR] ...
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=4
nj=2
device=cpu
seed=0                               # seed of the random split and of training
split=speaker                        # speaker: speaker-independent folds | random: 80/20 utterances
corpora="emodb cremad tess savee emovo ravdess"
emodb=/export/corpora/emodb          # wav/03a01Fa.wav ...
cremad=/export/corpora/CREMA-D       # AudioWAV/1001_DFA_ANG_XX.wav ...
tess=/export/corpora/TESS            # OAF_angry/OAF_back_angry.wav ...
savee=/export/corpora/SAVEE          # AudioData/DC/a01.wav ...
emovo=/export/corpora/EMOVO          # f1/rab-f1-b1.wav ...
ravdess=../../../shared/data/ravdess # Audio_Speech_Actors_01-24/Actor_01/03-01-...wav|flac
mfcc_conf=../../conf/mfcc.toml
model_conf=../../conf/model_cnn1d.toml
finetune_conf=../../conf/finetune.toml
train_conf=../../conf/train_cnn1d.toml
wave_augment_conf=../../conf/wave_augment.toml # waveform copies (noise, pitch) for training
. local/parse_options.sh
. local/stage.sh

case $split in
  speaker) protocol=auto ;;
  random) protocol=random-split ;;
  *) echo "$0: --split must be speaker or random, not '$split'" >&2; exit 1 ;;
esac

mkdir -p exp/log
# Everything this run prints is also kept in exp/log/.
exec > >(tee -a "exp/log/run.$(date -u +%Y%m%dT%H%M%S).log") 2>&1

# The corpora found on disk; the others are skipped, saying so.
present=()
for c in $corpora; do
  case $c in
    emodb|cremad|tess|savee|emovo|ravdess) ;;
    *) echo "$0: unknown corpus '$c' (emodb cremad tess savee emovo ravdess)" >&2; exit 1 ;;
  esac
  if [ -d "${!c}" ]; then
    present+=("$c")
  else
    echo "$0: skipping $c: not found at ${!c} (--$c DIR)" >&2
  fi
done
[ ${#present[@]} -gt 0 ] || { echo "$0: none of the corpora ($corpora) was found" >&2; exit 1; }

if run_stage 0 "data directories (${split} split): ${present[*]}"; then
  for c in "${present[@]}"; do
    local/prepare_data.sh --protocol $protocol --seed "$seed" $c "${!c}" data/${c}_$split
  done
  stage_done 0
fi

if run_stage 1 "MFCC features + waveform-augmented copies"; then
  for c in "${present[@]}"; do
    sertool extract-feats data/${c}_$split feats/${c}_${split}_mfcc --nj "$nj" --conf "$mfcc_conf" \
      --wave-augment "$wave_augment_conf"
  done
  stage_done 1
fi

if run_stage 2 "1D-CNN with attention, per fold"; then
  for c in "${present[@]}"; do
    sertool finetune feats/${c}_${split}_mfcc data/${c}_$split exp/cnn1d_$split/$c --init none \
      --model-conf "$model_conf" --conf "$finetune_conf" --train-conf "$train_conf" \
      --set augment.policy=none --device "$device"  # its augmentation: the waveform copies
  done
  stage_done 2
fi

if run_stage 3 "scores"; then
  # A report per corpus (line 1: the check-folds verdict) and one table over the corpora, whose
  # folds and class sets differ by construction (the table says so).
  sertool score $(for c in "${present[@]}"; do echo exp/cnn1d_$split/$c; done) \
    --allow-different-folds --allow-different-classes --compare-out exp/cnn1d_$split/summary.md \
    > /dev/null
  for c in "${present[@]}"; do echo "$c: $(head -n 1 exp/cnn1d_$split/$c/report.md)"; done
  cat exp/cnn1d_$split/summary.md
  stage_done 3
fi

if [ ${#present[@]} -lt 2 ] && [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  echo "$0: stage 4 (cross-corpus matrix) needs two corpora; found ${present[*]}" >&2
elif run_stage 4 "cross-corpus matrix: ${present[*]}"; then
  # Off the diagonal: train on all of corpus a (model selection on its held-out training
  # speakers), test on all of corpus b, on the classes both have (the others are listed in the
  # report and left out). On the diagonal: stage 2's fold runs.
  runs=()
  for a in "${present[@]}"; do
    runs+=(exp/cnn1d_$split/$a)
    for b in "${present[@]}"; do
      [ "$a" != "$b" ] || continue
      sertool finetune feats/${a}_${split}_mfcc data/${a}_$split exp/cross_$split/${a}_to_$b \
        --init none --model-conf "$model_conf" --conf "$finetune_conf" \
        --train-conf "$train_conf" --set augment.policy=none --device "$device" \
        --test-data data/${b}_$split --test-feats feats/${b}_${split}_mfcc
      runs+=(exp/cross_$split/${a}_to_$b)
    done
  done
  sertool score "${runs[@]}" --matrix --out-dir exp/cross_$split/matrix --no-progress
  stage_done 4
fi
