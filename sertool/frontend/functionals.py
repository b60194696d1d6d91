"""openSMILE functionals (front-end kind ``opensmile``): one vector per utterance.

The ``opensmile`` PyPI package (audEERING's wrapper; it ships the SMILExtract library) computes
the statistics ("functionals") of its low-level descriptors over the whole signal:
``eGeMAPSv02`` (Eyben et al. 2016, the extended Geneva minimalistic set, 88 values) or
``ComParE_2016`` (the ComParE challenge set, 6373 values). sertool stores the vector as a
1-frame matrix in the Kaldi feature archive, so every stage that reads features reads it, and
the ``functionals`` trunk (:mod:`sertool.models.functionals`) hands it to the head.

The package is an optional extra (``pip install 'sertool[opensmile]'``), imported here only,
when a front-end of this kind is built.
"""

from __future__ import annotations

import warnings

import numpy as np

from sertool.frontend.pipeline import FrontendError

# feature set -> the number of functionals (opensmile's FeatureSet names)
FEATURE_SETS: dict[str, int] = {"eGeMAPSv02": 88, "ComParE_2016": 6373}
INSTALL_HINT = "pip install 'sertool[opensmile]' (or pip install opensmile)"


class FunctionalsError(FrontendError):
    """The opensmile package is missing, or gives no usable vector for a signal (a
    FrontendError: extract-feats lists the utterance in FEAT_DIR/failed, predict reports it)."""


def import_opensmile():  # noqa: ANN201 - the module, typed only when installed
    """The ``opensmile`` module, or a FunctionalsError saying how to install it."""
    try:
        import opensmile
    except ImportError as err:
        raise FunctionalsError(f"front-end kind opensmile needs the opensmile package, which "
                               f"is not installed: {INSTALL_HINT}") from err
    return opensmile


class Functionals:
    """A configured openSMILE extractor: ``self(wave)`` -> (1, dim) float32."""

    def __init__(self, feature_set: str, sample_rate: int):
        if feature_set not in FEATURE_SETS:
            raise FunctionalsError(f"feature_set must be one of {', '.join(FEATURE_SETS)}, "
                                   f"got {feature_set!r}")
        opensmile = import_opensmile()
        self.feature_set = feature_set
        self.sample_rate = int(sample_rate)
        self.dim = FEATURE_SETS[feature_set]
        # built once per process (it parses the feature set's configuration, ~0.3 s)
        self.smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                                     feature_level=opensmile.FeatureLevel.Functionals)
        if len(self.smile.feature_names) != self.dim:  # another opensmile than the one known
            raise FunctionalsError(f"opensmile {opensmile.__version__} gives "
                                   f"{len(self.smile.feature_names)} {feature_set} "
                                   f"functionals, sertool expects {self.dim}")

    @property
    def names(self) -> list[str]:
        return list(self.smile.feature_names)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """The functionals of the whole signal (float in [-1, 1) at ``sample_rate``); a signal
        too short for them (openSMILE fills its vector with NaN) is a FunctionalsError."""
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        if len(wave) == 0:
            raise FunctionalsError("empty signal")
        with warnings.catch_warnings():  # "Segment too short, filling with NaN": said below
            warnings.simplefilter("ignore", UserWarning)
            try:
                frame = self.smile.process_signal(wave, self.sample_rate)
            except Exception as err:  # noqa: BLE001 - SMILExtract's errors, whatever their type
                raise FunctionalsError(f"openSMILE failed on the signal: {err}") from err
        values = frame.to_numpy(dtype=np.float32).reshape(1, -1)
        bad = ~np.isfinite(values[0])
        if bad.any():
            raise FunctionalsError(
                f"signal of {len(wave)} samples ({len(wave) / self.sample_rate:.3f} s) is too "
                f"short for openSMILE's {self.feature_set}: {int(bad.sum())} of {self.dim} "
                f"functionals are NaN or infinite (e.g. {self.names[int(np.argmax(bad))]})")
        return values
