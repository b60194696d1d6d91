"""A small SYNTHETIC demo corpus: no recorded speech, generated from a seed in a few seconds.

``make_demo_corpus(out, seed)`` writes two trees in the layouts of the real corpora, so that
``sertool prepare`` reads them with the same code:

``out/IEMOCAP_full_release``  5 sessions x 2 speakers (F, M), 3 dialogs per session, 360
    utterances of 1.5-3 s; ``Session*/sentences/wav/<dialog>/<utt>.wav`` and
    ``Session*/dialog/EmoEvaluation/<dialog>.txt`` in the real format (summary line with the
    consensus label, then the annotators' ``C-E*:`` / ``A-E*:`` lines). Labels: ang, hap,
    neu, sad plus exc, fru and ``xxx`` (no agreement) to exercise the class maps.
``out/voxceleb``  24 speakers x 8 utterances, ``wav/idNNNNN/<video>/<nnnnn>.wav``.

The voices: a glottal pulse train (speaker-dependent f0 range) through a source tilt filter
and four formant resonators (speaker-dependent vocal-tract scale, a vowel per syllable),
voiced syllables with fricative noise onsets, pauses, leading/trailing silence and a low noise
floor (so a VAD has work). Emotion changes the prosody: pitch level and range, pitch contour
(rising for happy, falling for angry), tempo and pauses, energy and spectral tilt, and
breathiness. These cues survive per-utterance CMVN, so a small CNN on log-mels learns them
well above chance; they are cleaner than real emotional speech, so numbers on this corpus say
that the pipeline works, not how well a model recognises emotion.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sertool.io_utils import atomic_write_text

RATE = 16000
SESSIONS = 5
UTTS_PER_DIALOG = 24  # alternating F and M turns
DIALOGS = ("{s}F_impro01", "{s}M_impro01", "{s}F_script01_1")
VOX_SPEAKERS = 24
VOX_UTTS = 8

# consensus labels of the demo turns and how often they occur
LABEL_PROBS = {"neu": 0.25, "ang": 0.17, "sad": 0.17, "hap": 0.14, "exc": 0.12,
               "fru": 0.08, "xxx": 0.07}
ANNOTATOR_WORDS = {"neu": "Neutral", "ang": "Anger", "sad": "Sadness", "hap": "Happiness",
                   "exc": "Excited", "fru": "Frustration", "sur": "Surprise"}
VAD = {"neu": (3.0, 2.5, 2.5), "ang": (1.5, 4.0, 4.0), "sad": (1.5, 2.0, 2.0),
       "hap": (4.0, 3.5, 3.0), "exc": (4.0, 4.0, 3.5), "fru": (2.0, 3.5, 3.0),
       "xxx": (2.5, 3.0, 3.0)}


@dataclass(frozen=True)
class Style:
    """Emotion-dependent prosody."""

    f0_scale: float  # pitch level relative to the speaker's
    f0_range: float  # semitones of movement within a syllable
    slope: float  # -1 falling .. +1 rising contour within a syllable
    syllable_s: float  # mean syllable duration (tempo)
    pause_prob: float  # chance of a pause after a syllable
    gain: float  # energy
    tilt: float  # source low-pass pole: higher = darker (steeper tilt)
    breath: float  # aspiration noise mixed into voicing


STYLES = {
    "neu": Style(1.00, 1.5, 0.0, 0.20, 0.15, 0.35, 0.95, 0.02),
    "ang": Style(1.30, 4.0, -0.9, 0.14, 0.05, 0.80, 0.80, 0.15),
    "hap": Style(1.35, 7.0, 0.9, 0.18, 0.10, 0.55, 0.88, 0.03),
    "exc": Style(1.40, 8.0, 0.8, 0.15, 0.08, 0.65, 0.86, 0.04),
    "sad": Style(0.85, 0.7, -0.2, 0.30, 0.35, 0.20, 0.975, 0.06),
    "fru": Style(1.15, 3.0, -0.5, 0.17, 0.10, 0.60, 0.85, 0.10),
}
# (F1, F2, F3, F4) in Hz of a reference vocal tract, scaled per speaker
VOWELS = np.array([[730, 1090, 2440, 3400], [270, 2290, 3010, 3700], [300, 870, 2240, 3300],
                   [530, 1840, 2480, 3500], [570, 840, 2410, 3400], [660, 1720, 2410, 3500]])
BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0])


@dataclass(frozen=True)
class Voice:
    f0: float  # Hz, speaker's mean pitch
    tract: float  # formant scale (shorter tract = higher formants)


def _voice(rng: np.random.Generator, gender: str) -> Voice:
    if gender == "F":
        return Voice(float(rng.uniform(175, 240)), float(rng.uniform(1.08, 1.22)))
    return Voice(float(rng.uniform(90, 140)), float(rng.uniform(0.88, 1.02)))


def _resonate(x: np.ndarray, freq: float, bw: float) -> np.ndarray:
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bw / RATE)
    theta = 2 * np.pi * min(freq, 0.45 * RATE) / RATE
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([1.0 - r], a, x)


def _syllable(rng: np.random.Generator, voice: Voice, style: Style, dur: float,
              base_f0: float) -> np.ndarray:
    from scipy.signal import lfilter

    n = int(dur * RATE)
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    semis = style.f0_range * (style.slope * (t - 0.5) + 0.25 * np.sin(np.pi * t))
    f0 = base_f0 * 2 ** (semis / 12) * (1 + 0.004 * rng.standard_normal(n).cumsum() / np.sqrt(n))
    phase = np.cumsum(f0) / RATE
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal cycle
    source = lfilter([1.0], [1.0, -style.tilt], pulses - pulses.mean())  # roll-off = tilt
    source += style.breath * rng.standard_normal(n) * np.abs(source).mean() * 4
    vowel = VOWELS[rng.integers(len(VOWELS))] * voice.tract
    out = sum(_resonate(source, f, b) * (0.9 ** i)
              for i, (f, b) in enumerate(zip(vowel, BANDWIDTHS, strict=True)))
    env = np.sin(np.pi * t) ** 0.6
    out = out * env
    return out / (np.abs(out).max() + 1e-9)


def _fricative(rng: np.random.Generator, dur: float) -> np.ndarray:
    n = int(dur * RATE)
    noise = rng.standard_normal(n)
    centre = rng.uniform(3000, 6000)
    out = _resonate(noise, centre, 1500) + 0.3 * _resonate(noise, centre * 0.6, 1000)
    return 0.25 * out / (np.abs(out).max() + 1e-9) * np.hanning(n)


def synth_utterance(rng: np.random.Generator, voice: Voice, emotion: str,
                    duration: float) -> np.ndarray:
    """One utterance of about ``duration`` s (float32 in [-1, 1])."""
    style = STYLES.get(emotion, STYLES["neu"])
    lead, trail = rng.uniform(0.15, 0.35, size=2)
    pieces = [np.zeros(int(lead * RATE))]
    speech = duration - lead - trail
    elapsed = 0.0
    while elapsed < speech:
        if rng.random() < 0.35:
            fric = _fricative(rng, rng.uniform(0.05, 0.09))
            pieces.append(fric)
            elapsed += len(fric) / RATE
        dur = float(np.clip(rng.normal(style.syllable_s, style.syllable_s * 0.2), 0.07, 0.5))
        base = voice.f0 * style.f0_scale * 2 ** (rng.normal(0, 1.0) / 12)
        pieces.append(_syllable(rng, voice, style, dur, base) * rng.uniform(0.7, 1.0))
        elapsed += dur
        if rng.random() < style.pause_prob:
            pause = rng.uniform(0.1, 0.3)
            pieces.append(np.zeros(int(pause * RATE)))
            elapsed += pause
    pieces.append(np.zeros(int(trail * RATE)))
    signal = np.concatenate(pieces) * style.gain * rng.uniform(0.8, 1.1)
    signal += 10 ** (-55 / 20) * rng.standard_normal(len(signal))  # noise floor, about -55 dB
    return np.clip(signal, -1, 1).astype(np.float32)


def _write_wav(path: Path, samples: np.ndarray) -> None:
    import soundfile as sf

    from sertool.io_utils import atomic_replace_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), samples, RATE, subtype="PCM_16", format="WAV")
    atomic_replace_file(tmp, path)


def _annotations(rng: np.random.Generator, label: str) -> list[str]:
    """Three categorical annotator lines whose majority is ``label`` (none for xxx)."""
    others = [w for k, w in ANNOTATOR_WORDS.items() if k != label]
    if label == "xxx":
        words = list(rng.choice(others, size=3, replace=False))
    else:
        words = [ANNOTATOR_WORDS[label], ANNOTATOR_WORDS[label], str(rng.choice(others))]
        if rng.random() < 0.5:
            words[2] = ANNOTATOR_WORDS[label]
    return [f"C-E{i + 1}:\t{w};\t()" for i, w in enumerate(words)]


def _iemocap(root: Path, seed: int) -> int:
    labels = list(LABEL_PROBS)
    probs = np.array(list(LABEL_PROBS.values()))
    count = 0
    for s in range(1, SESSIONS + 1):
        ses = f"Ses{s:02d}"
        srng = np.random.default_rng([seed, 1, s])
        voices = {"F": _voice(srng, "F"), "M": _voice(srng, "M")}
        session = root / f"Session{s}"
        for d, pattern in enumerate(DIALOGS):
            dialog = pattern.format(s=ses)
            rng = np.random.default_rng([seed, 2, s, d])
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            clock = rng.uniform(2.0, 6.0)
            numbers = {"F": 0, "M": 0}
            for turn in range(UTTS_PER_DIALOG):
                gender = "FM"[turn % 2] if dialog[5] == "F" else "MF"[turn % 2]
                utt = f"{dialog}_{gender}{numbers[gender]:03d}"
                numbers[gender] += 1
                label = str(rng.choice(labels, p=probs))
                # no agreement (xxx): the voice carries a mix of styles, like an ambiguous turn
                style = label if label in STYLES else str(rng.choice(["neu", "ang", "fru", "sad"]))
                duration = float(rng.uniform(1.5, 3.0))
                _write_wav(session / "sentences" / "wav" / dialog / f"{utt}.wav",
                           synth_utterance(rng, voices[gender], style, duration))
                v, a, dom = VAD[label]
                lines.append(f"[{clock:.4f} - {clock + duration:.4f}]\t{utt}\t{label}\t"
                             f"[{v:.4f}, {a:.4f}, {dom:.4f}]")
                lines += _annotations(rng, label)
                lines.append(f"A-E1:\tval {round(v)}; act {round(a)}; dom  {round(dom)};\t()")
                lines.append("")
                clock += duration + rng.uniform(0.3, 2.0)
                count += 1
            eval_file = session / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
            atomic_write_text(eval_file, "\n".join(lines) + "\n")
    return count


def _voxceleb(root: Path, seed: int) -> int:
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"))
    count = 0
    for k in range(VOX_SPEAKERS):
        rng = np.random.default_rng([seed, 3, k])
        voice = _voice(rng, "FM"[k % 2])
        spk = f"id{10001 + k:05d}"
        videos = ["".join(rng.choice(alphabet, size=11)) for _ in range(3)]
        for n in range(VOX_UTTS):
            style = str(rng.choice(["neu", "neu", "hap", "sad", "ang"]))
            audio = synth_utterance(rng, voice, style, float(rng.uniform(2.0, 3.0)))
            _write_wav(root / "wav" / spk / videos[n % 3] / f"{n + 1:05d}.wav", audio)
            count += 1
    return count


def make_demo_corpus(out: str | os.PathLike, seed: int = 0) -> dict[str, int]:
    """Write the synthetic demo corpora under ``out``; return utterance counts per corpus.

    ``out/.done`` (holding the seed) is written last, so a recipe can skip a finished corpus.
    """
    out = Path(out)
    counts = {"iemocap": _iemocap(out / "IEMOCAP_full_release", seed),
              "voxceleb": _voxceleb(out / "voxceleb", seed)}
    atomic_write_text(out / ".done", f"synthetic demo corpus, seed {seed}\n")
    return counts
