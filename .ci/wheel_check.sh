#!/usr/bin/env bash
# The installed wheel behaves like the checkout (issue 11): build the wheel, install it into a
# clean venv that reuses .venv's dependencies (torch & co., not sertool itself), and from a folder
# outside the checkout run `sertool --help`, extract-feats on two RAVDESS files, and short train
# and finetune runs on the demo corpus without --conf (the shipped configurations are used).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv_py=$repo/.venv/bin/python
shared=${SERTOOL_SHARED_DATA:-$repo/../shared/data}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== wheel check in $work"
"$venv_py" -m pip wheel --quiet --no-deps -w "$work/dist" "$repo"
wheel=$(ls "$work"/dist/sertool-*.whl)
"$venv_py" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
confs = sorted(n for n in names if n.startswith("sertool/conf/") and n.endswith(".toml"))
assert "sertool/conf/frontend.toml" in confs and "sertool/conf/finetune.toml" in confs, confs
assert not [n for n in names if n.startswith(("tests/", "recipes/", "conf/"))], "stray files"
print(f"wheel holds {len(confs)} shipped configurations")
PY

# A clean venv that sees .venv's site-packages through a folder of links to everything in it
# except sertool's own (editable) install, so pip resolves the wheel's dependencies against the
# already-installed torch and installs sertool from the wheel alone.
"$venv_py" -c "import sys; print(sys.base_prefix)" >/dev/null
base_py=$("$venv_py" -c "import sys, os; print(os.path.join(sys.base_prefix, 'bin', 'python3'))")
"$base_py" -m venv "$work/venv"
site=$("$venv_py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
deps=$work/deps
mkdir "$deps"
for entry in "$site"/*; do
  case "$(basename "$entry")" in
    sertool*|__editable__*sertool*|_sertool*|*.pth) ;;
    *) ln -s "$entry" "$deps/" ;;
  esac
done
new_site=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$deps" > "$new_site/_sertool_ci_deps.pth"
"$work/venv/bin/python" -m pip install --quiet "$wheel"

out=$work/outside
mkdir "$out"
cd "$out"
export PATH="$work/venv/bin:$PATH"
location=$(python -c "import sertool; print(sertool.__file__)")
case "$location" in
  "$work"/venv/*) echo "sertool imported from the wheel: $location" ;;
  *) echo "sertool imported from $location, not from the wheel" >&2; exit 1 ;;
esac
sertool --help >/dev/null
sertool --version

ravdess=$shared/ravdess/Audio_Speech_Actors_01-24/Actor_01
sertool extract-feats --no-progress -o loose "$ravdess/03-01-01-01-01-01-01.flac" \
  "$ravdess/03-01-05-02-01-01-01.flac"
test "$(wc -l < loose/feats.scp)" -eq 2
grep -q '"num_bins": 128' loose/frontend.json  # the shipped frontend.toml, not a fallback

sertool make-demo-corpus corpus >/dev/null
sertool prepare iemocap corpus/IEMOCAP_full_release data/emotion --exp 1 >/dev/null
sertool prepare voxceleb corpus/voxceleb data/speaker >/dev/null
sertool extract-feats --no-progress data/emotion feats/emotion --nj 2
sertool extract-feats --no-progress data/speaker feats/speaker --nj 2
sertool train --task speaker feats/speaker data/speaker exp/speaker --no-progress \
  --model-conf model_resnet_tiny.toml --set epochs=1
sertool finetune feats/emotion data/emotion exp/emotion --init exp/speaker/final.pt \
  --fold 1 --set head.epochs=2
test -f exp/emotion/fold_1/posteriors.tsv
sertool score exp/emotion | head -1
echo "== wheel check passed"
