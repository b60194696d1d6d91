"""Model bundle checks and prediction output formats (no model training: fast)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from sertool.cli import main
from sertool.predict import (
    BUNDLE_FORMAT,
    BundleError,
    Prediction,
    predictions_csv,
    read_bundle_meta,
    sha256_of,
)


def _fake_bundle(path):
    path.mkdir()
    (path / "model.pt").write_bytes(b"weights")
    (path / "frontend.json").write_text('{"kind": "logmel"}')
    meta = {"format": BUNDLE_FORMAT, "classes": ["ang", "sad"], "model_conf": {}, "feat_dim": 4,
            "files": {n: sha256_of(path / n) for n in ("model.pt", "frontend.json")}}
    (path / "bundle.json").write_text(json.dumps(meta))
    return meta


def test_bundle_meta_is_checked_file_by_file(tmp_path):
    bundle = tmp_path / "b"
    meta = _fake_bundle(bundle)
    assert read_bundle_meta(bundle)["classes"] == ["ang", "sad"]
    (bundle / "model.pt").write_bytes(b"weightz")
    with pytest.raises(BundleError, match=r"model\.pt: damaged"):
        read_bundle_meta(bundle)
    (bundle / "model.pt").unlink()
    with pytest.raises(BundleError, match=r"model\.pt: missing from the bundle"):
        read_bundle_meta(bundle)
    (bundle / "bundle.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(BundleError, match="bundle format 99"):
        read_bundle_meta(bundle)
    (bundle / "bundle.json").write_text(json.dumps({**meta, "files": {"../x": "0"}}))
    with pytest.raises(BundleError, match="not a plain file name"):
        read_bundle_meta(bundle)
    (bundle / "bundle.json").write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle_meta(bundle)
    with pytest.raises(BundleError, match="not a model bundle directory"):
        read_bundle_meta(tmp_path / "nowhere")
    (bundle / "bundle.json").unlink()
    with pytest.raises(BundleError, match=r"bundle\.json: not found"):
        read_bundle_meta(bundle)


def test_csv_has_probabilities_or_the_error_per_file():
    preds = [Prediction("a.wav", {"ang": 0.25, "sad": 0.75}, 1.5),
             Prediction("bad, name.wav", error="bad, name.wav: cannot decode audio"),
             Prediction("q.wav", {"ang": 0.5, "sad": 0.5}, 0.05,
                        warnings={"too_short": "0.050 s", "vad_fallback": "kept all"})]
    rows = list(csv.reader(io.StringIO(predictions_csv(preds, ["ang", "sad"]))))
    # the warning column comes last; entropy (over log 2: .25/.75 -> 0.811278) and max_prob
    # follow the class columns
    assert rows == [["file", "pred", "ang", "sad", "entropy", "max_prob", "duration_s",
                     "error", "warning"],
                    ["a.wav", "sad", "0.250000", "0.750000", "0.811278", "0.750000", "1.500",
                     "", ""],
                    ["bad, name.wav", "", "", "", "", "", "",
                     "bad, name.wav: cannot decode audio", ""],
                    ["q.wav", "ang", "0.500000", "0.500000", "1.000000", "0.500000", "0.050",
                     "", "too_short;vad_fallback"]]


def test_predict_cli_rejects_a_bad_bundle_and_output_name(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(tmp_path), "x.wav"])
    assert result.exit_code == 1
    assert "bundle.json: not found" in result.output
    result = runner.invoke(main, ["predict", str(tmp_path), "x.wav", "-o", "out.txt"])
    assert result.exit_code == 1 and "must end in .csv or .json" in result.output
