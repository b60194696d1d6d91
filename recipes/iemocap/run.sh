#!/usr/bin/env bash
# Padi, Sadjadi, Sriram & Manocha (ICMI 2021), "Improved Speech Emotion Recognition using Transfer
# Learning and Spectrogram Augmentation", as written:
#   a ResNet34 with statistics pooling trained for speaker recognition on VoxCeleb1+2, its FC
#   layers replaced and retrained for emotion on IEMOCAP (Exp 1/2/3, leave-one-session-out) with
#   the conservative and aggressive SpecAugment policies, scored next to the paper's Table 3,
#   and the ablation (5-fold random CV with/without transfer, augmentation, statistics pooling).
#
#   0 data dirs   1 features   2 speaker pretraining   3 transfer to emotion (per LOSO fold)
#   4 scores + Table 3   5 ablation
#
# GPU defaults. Several GPUs: --ngpu N runs the speaker pretraining under torchrun (DDP).
# Usage: ./run.sh [--stage N] [--stop-stage N] [--iemocap DIR] [--voxceleb1 DIR] [--voxceleb2 DIR]
#                 [--ngpu N] [--device cuda|cpu] [--nj N] ...   (./run.sh --help lists them all)
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=5
nj=16                            # parallel feature-extraction jobs
cmd=local                        # where the jobs of extract-feats and finetune (its
                                 # embeddings, one job per fold) run: local, or slurm (one
                                 # sbatch job array a stage; README "Running on a cluster")
ngpu=1                           # >1: torchrun --nproc_per_node=$ngpu for speaker pretraining
device=cuda
seed=0
iemocap=/export/corpora/IEMOCAP_full_release
voxceleb1=/export/corpora/VoxCeleb1   # wav/idNNNNN/... (dev and test parts)
voxceleb2=/export/corpora/VoxCeleb2   # aac/idNNNNN/...m4a (decoded once to data/voxceleb2_wav)
frontend_conf=../../conf/frontend.toml     # 128 log-mel, VAD, segment-level CMVN
model_conf=../../conf/model_resnet34.toml  # BasicBlock [3,4,6,3], widths 32..256, stats pooling
speaker_conf=../../conf/train_speaker.toml   # paper section 4.2
finetune_conf=../../conf/finetune.toml     # frozen trunk, each segment + 2 SpecAugment copies
train_conf=conf/train_emotion.toml         # networks trained from scratch (the no-transfer row)
exps="1 2 3"                      # IEMOCAP class maps (see `sertool prepare --help`)
policies="conservative aggressive"  # SpecAugment policies (paper Table 1)
folds=all                         # or a list of fold names, e.g. "1 2" (the report then says
                                  # INCOMPLETE)
ablation_exp=1                    # class map of the ablation
ablation_folds=5                  # its random CV (NOT speaker-independent)
ablation_policy=conservative
ablations="no_transfer no_augmentation no_pooling"
. local/parse_options.sh
. local/stage.sh

mkdir -p exp/log
# Everything this run prints is also kept in exp/log/.
exec > >(tee -a "exp/log/run.$(date -u +%Y%m%dT%H%M%S).log") 2>&1

speaker_model=exp/speaker/resnet34/final.pt
speaker_model_nopool=exp/speaker/resnet34_nopool/final.pt

# speaker_pretrain EXP_DIR [--set ...]: sertool train --task speaker, under torchrun if ngpu > 1.
speaker_pretrain() {
  local exp_dir=$1; shift
  local launcher=()
  if [ "$ngpu" -gt 1 ]; then
    launcher=(torchrun --standalone --nnodes=1 --nproc_per_node="$ngpu" --no-python)
  fi
  "${launcher[@]+"${launcher[@]}"}" sertool train --task speaker feats/voxceleb data/voxceleb \
    "$exp_dir" --conf "$speaker_conf" --model-conf "$model_conf" --device "$device" "$@"
}

# finetune ARGS...: sertool finetune over $folds (all of them, or the listed ones). A finished fold
# (posteriors and done marker) is skipped, so a rerun continues where a killed one stopped.
finetune() {
  local common=(--conf "$finetune_conf" --train-conf "$train_conf" --device "$device"
    --cmd "$cmd")
  if [ "$folds" = all ]; then
    sertool finetune "$@" "${common[@]}"
  else
    local f
    for f in $folds; do sertool finetune "$@" "${common[@]}" --fold "$f"; done
  fi
}

if run_stage 0 "data directories: VoxCeleb1+2 (speakers), IEMOCAP Exp ${exps// //} + ablation CV"; then
  voxsets=()
  for v in 1 2; do
    src=voxceleb$v
    if [ -d "${!src}" ]; then
      local/prepare_data.sh voxceleb "${!src}" data/voxceleb$v
      voxsets+=(data/voxceleb$v)
    else
      echo "$0: VoxCeleb$v not found at ${!src} (--voxceleb$v DIR); not used" >&2
    fi
  done
  [ ${#voxsets[@]} -gt 0 ] || { echo "$0: no VoxCeleb corpus found" >&2; exit 1; }
  sertool combine-data-dirs data/voxceleb "${voxsets[@]}"   # disjoint speakers
  # Exp 3 (happy + excited merged) holds every utterance of Exp 1 and Exp 2 under the same id:
  # its features serve all three.
  for e in $(echo "$exps 3" | tr ' ' '\n' | sort -u); do
    local/prepare_data.sh --exp "$e" iemocap "$iemocap" data/iemocap_exp$e
  done
  local/prepare_data.sh --exp "$ablation_exp" --protocol kfold-random --folds "$ablation_folds" \
    --seed "$seed" iemocap "$iemocap" data/iemocap_cv$ablation_folds
  stage_done 0
fi

if run_stage 1 "features: 128 log-mel, VAD, segment-level CMVN"; then
  sertool extract-feats data/voxceleb feats/voxceleb --nj "$nj" --cmd "$cmd" --conf "$frontend_conf"
  sertool extract-feats data/iemocap_exp3 feats/iemocap --nj "$nj" --cmd "$cmd" --conf "$frontend_conf"
  stage_done 1
fi

if run_stage 2 "speaker pretraining of the ResNet34 on VoxCeleb"; then
  speaker_pretrain exp/speaker/resnet34
  stage_done 2
fi

if run_stage 3 "transfer to emotion: Exp ${exps// //} x SpecAugment ${policies// //}, per fold"; then
  for e in $exps; do
    for p in $policies; do
      finetune feats/iemocap data/iemocap_exp$e exp/emotion/exp${e}_$p \
        --init "$speaker_model" --set augment.policy="$p"
    done
  done
  stage_done 3
fi

if run_stage 4 "scores, next to the paper's Table 3"; then
  for e in $exps; do
    sertool score $(for p in $policies; do echo exp/emotion/exp${e}_$p; done) \
      --compare-out exp/emotion/exp$e.md
  done
  # The side-by-side tables (exp/emotion/exp<E>.json) next to the published UA/WA (published.tsv).
  python3 local/published_table.py published.tsv \
    $(for e in $exps; do echo "$e=exp/emotion/exp$e.json"; done) \
    --title "# IEMOCAP, leave-one-session-out: this run next to Padi et al. (2021), Table 3" \
    --note "This run: mean ± sample std over folds. Reports: exp/emotion/exp<E>_<policy>/report.md" \
    > exp/emotion/table3.md.tmp
  mv exp/emotion/table3.md.tmp exp/emotion/table3.md
  cat exp/emotion/table3.md
  stage_done 4
fi

if run_stage 5 "ablation: ${ablation_folds}-fold random CV (NOT speaker-independent)"; then
  cv=data/iemocap_cv$ablation_folds
  finetune feats/iemocap $cv exp/ablation/full --init "$speaker_model" \
    --set augment.policy="$ablation_policy"
  ablated=()
  for a in $ablations; do
    case $a in
      no_transfer)
        finetune feats/iemocap $cv exp/ablation/$a --init none --model-conf "$model_conf" \
          --set augment.policy="$ablation_policy" ;;
      no_augmentation)
        finetune feats/iemocap $cv exp/ablation/$a --init "$speaker_model" \
          --set augment.policy=none ;;
      no_pooling)
        # The speaker model itself is trained without statistics pooling.
        speaker_pretrain exp/speaker/resnet34_nopool --set model.pooling=none
        finetune feats/iemocap $cv exp/ablation/$a --init "$speaker_model_nopool" \
          --set augment.policy="$ablation_policy" ;;
      *) echo "$0: unknown ablation '$a' (no_transfer no_augmentation no_pooling)" >&2; exit 1 ;;
    esac
    ablated+=(exp/ablation/$a)
  done
  # report.md line 1 of each says NOT speaker-independent (the scorer re-checks the folds).
  sertool score exp/ablation/full "${ablated[@]}" --compare-out exp/ablation/compare.md \
    --ablation-png exp/ablation/ablation.png
  echo "NOTE: ${ablation_folds}-fold random CV puts every speaker on both sides of each fold;" \
    "these numbers are NOT speaker-independent (as in the paper's ablation)."
  stage_done 5
fi
