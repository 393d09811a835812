"""A generated toy emotion corpus for the demo: speech-like audio whose four classes differ in prosody.

No IEMOCAP is on a fresh machine, so the demo brings its own data. A source-filter
synthesizer (harmonic glottal source with an F0 contour, jitter, shimmer and breath noise,
vowel formant resonators, syllable envelopes) speaks one of a few fixed "sentences" (vowel
sequences with a stress pattern) in one of the four IEMOCAP classes. Every class speaks
every sentence equally often, so the content carries no label; the classes differ only in
F0 level and range, speaking rate, level, spectral tilt and voice quality (jitter, shimmer,
breathiness), each drawn around the class's value so the classes overlap.

Some non-neutral utterances are *partial*: only a contiguous run of syllables carries the
emotion and the rest is spoken neutrally, the situation that motivates frame-level
alignment. Every utterance records its emotional span (``emotion_start``/``emotion_end``
in seconds): the part spoken in the style of its label. For neutral and fully emotional
utterances that is the whole utterance. ``spans.json`` holds the same spans in the format of
SpeechBrain's ZED recipe, for ``tools/evaluate.py --spans`` (EDER, attention in span).

Eight speakers (four female-like, four male-like, each with its own base pitch, speaking
rate and formant scale) in four IEMOCAP-like sessions of one female and one male speaker.
The demo split holds the last session out: its female speaker validates, its male speaker
is test, the other sessions train.
"""

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import soundfile as sf
from scipy.ndimage import uniform_filter1d
from scipy.signal import lfilter
from tqdm import tqdm

from fairseq_flea.io.atomic_files import atomic_outputs, write_text_atomically
from fairseq_flea.corpus.folds import Utterance, write_dictionary, write_split
from fairseq_flea.io.errors import FleaInputError

SAMPLE_RATE = 16000
CLASSES = ("ang", "hap", "neu", "sad")
NEUTRAL = "neu"
SPLITS = ("train", "valid", "test")
HELD_OUT_GROUP = "Session4"
DEFAULT_UTTERANCES_PER_SPEAKER = 48
DEFAULT_PARTIAL_FRACTION = 0.3
MIN_SECONDS, MAX_SECONDS = 1.0, 3.0
METADATA_COLUMNS = (
    "path", "label", "speaker", "group", "split",
    "emotion_start", "emotion_end", "duration", "sentence",
)
CORPUS_COLUMNS = ("path", "label", "speaker", "group")
SPANS_FILE = "spans.json"

# F1-F3 in Hz of an adult male voice (Peterson & Barney); female-like speakers scale them up.
VOWEL_FORMANTS: Dict[str, Tuple[float, float, float]] = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (270.0, 2290.0, 3010.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (300.0, 870.0, 2240.0),
    "y": (640.0, 1190.0, 2390.0),
}
FORMANT_BANDWIDTHS = (80.0, 100.0, 140.0)
# The "lexical" content shared by all classes: one vowel per syllable, upper case = stressed.
SENTENCES = ("aIeoUa", "oAuyEai", "iEaoUyo", "yOaIeuaE", "eUioAyeIa", "uaEyoIaeOuy")


@dataclass(frozen=True)
class Speaker:
    name: str
    group: str
    base_f0: float  # Hz
    syllable_seconds: float  # neutral syllable duration
    formant_scale: float  # vocal tract length: >1 shorter (female-like)


@dataclass(frozen=True)
class EmotionStyle:
    """How a stretch of speech is spoken; the class values are the centres of random draws."""

    pitch_semitones: float  # F0 level above the speaker's base
    pitch_range_semitones: float  # size of the stressed-syllable accents
    duration_factor: float  # syllable duration relative to the speaker's (>1 = slower)
    level_db: float  # loudness relative to neutral
    tilt: float  # -1 dark (steep spectral slope, lax voice) .. +1 bright (tense voice)
    jitter: float  # relative F0 perturbation per ~period
    shimmer: float  # relative amplitude perturbation per ~period
    breathiness: float  # aspiration noise relative to the harmonic source


CLASS_STYLES: Dict[str, EmotionStyle] = {
    "neu": EmotionStyle(0.0, 1.5, 1.00, 0.0, 0.0, 0.006, 0.04, 0.08),
    "ang": EmotionStyle(3.0, 3.5, 0.85, 6.0, 0.7, 0.020, 0.10, 0.04),
    "hap": EmotionStyle(4.5, 5.5, 0.88, 3.5, 0.2, 0.008, 0.05, 0.08),
    "sad": EmotionStyle(-1.5, 0.8, 1.30, -5.0, -0.6, 0.014, 0.06, 0.25),
}

# How much each utterance's style varies around its class's centre (one standard deviation).
STYLE_SPREAD = EmotionStyle(1.5, 1.0, 0.10, 2.5, 0.3, 0.003, 0.02, 0.04)

SPEAKERS: Tuple[Speaker, ...] = (
    Speaker("Ses1F", "Session1", 215.0, 0.165, 1.17),
    Speaker("Ses1M", "Session1", 110.0, 0.175, 1.00),
    Speaker("Ses2F", "Session2", 240.0, 0.155, 1.20),
    Speaker("Ses2M", "Session2", 125.0, 0.185, 0.97),
    Speaker("Ses3F", "Session3", 195.0, 0.180, 1.14),
    Speaker("Ses3M", "Session3", 98.0, 0.160, 1.03),
    Speaker("Ses4F", "Session4", 225.0, 0.170, 1.18),
    Speaker("Ses4M", "Session4", 115.0, 0.170, 0.99),
)


@dataclass(frozen=True)
class DemoUtterance:
    path: str  # relative to the corpus directory
    label: str
    speaker: str
    group: str
    split: str
    emotion_start: float  # seconds
    emotion_end: float
    duration: float
    sentence: int
    num_samples: int


def split_of_speaker(speaker: Speaker) -> str:
    """The held-out session's female speaker validates, its male speaker is test."""
    if speaker.group != HELD_OUT_GROUP:
        return "train"
    return "valid" if speaker.name.endswith("F") else "test"


def draw_style(rng: np.random.Generator, label: str) -> EmotionStyle:
    """One utterance's style: the class's centre plus Gaussian spread, kept physically sensible."""
    centre = CLASS_STYLES[label]
    values = {
        field: getattr(centre, field) + rng.normal(0.0, getattr(STYLE_SPREAD, field))
        for field in EmotionStyle.__dataclass_fields__
    }
    values["pitch_range_semitones"] = max(values["pitch_range_semitones"], 0.2)
    values["duration_factor"] = max(values["duration_factor"], 0.6)
    values["tilt"] = float(np.clip(values["tilt"], -1.0, 1.0))
    for field in ("jitter", "shimmer", "breathiness"):
        values[field] = max(values[field], 0.0)
    return EmotionStyle(**values)


def emotional_syllables(
    rng: np.random.Generator, num_syllables: int, partial: bool
) -> np.ndarray:
    """Which syllables carry the emotion: all, or a contiguous run of about 30-60 % of them."""
    if not partial:
        return np.ones(num_syllables, dtype=bool)
    length = int(np.clip(round(rng.uniform(0.3, 0.6) * num_syllables), 1, num_syllables - 1))
    start = int(rng.integers(0, num_syllables - length + 1))
    carries = np.zeros(num_syllables, dtype=bool)
    carries[start : start + length] = True
    return carries


def syllable_sample_counts(
    rng: np.random.Generator, speaker: Speaker, duration_factors: np.ndarray
) -> Tuple[int, np.ndarray, int]:
    """Leading silence, per-syllable and trailing silence lengths in samples; 1-3 s in all."""
    seconds = speaker.syllable_seconds * duration_factors * rng.lognormal(0.0, 0.12, len(duration_factors))
    lead, trail = rng.uniform(0.06, 0.15, 2)
    room = MAX_SECONDS - lead - trail - 0.01
    if seconds.sum() > room:
        seconds *= room / seconds.sum()
    trail = max(trail, MIN_SECONDS - lead - seconds.sum() + 0.01)
    return int(lead * SAMPLE_RATE), np.round(seconds * SAMPLE_RATE).astype(int), int(trail * SAMPLE_RATE)


def per_sample_values(values: np.ndarray, lead: int, counts: np.ndarray, trail: int) -> np.ndarray:
    """One value per syllable -> one per sample; the silences take their neighbour's value."""
    return np.concatenate([np.full(lead, values[0]), np.repeat(values, counts), np.full(trail, values[-1])])


def smooth(signal: np.ndarray, seconds: float) -> np.ndarray:
    """A moving average, so that style changes ramp over a few tens of ms instead of clicking."""
    return uniform_filter1d(signal, size=max(1, int(seconds * SAMPLE_RATE)), mode="nearest")


def block_noise(rng: np.random.Generator, num_samples: int, block_seconds: float = 0.005) -> np.ndarray:
    """Standard normal noise held constant over blocks of about one glottal period."""
    block = int(block_seconds * SAMPLE_RATE)
    return np.repeat(rng.standard_normal(num_samples // block + 1), block)[:num_samples]


def harmonic_source(f0: np.ndarray, max_frequency: float = 5000.0) -> np.ndarray:
    """Band-limited glottal source: harmonics at 1/h amplitude, faded out below ``max_frequency``."""
    phase = 2.0 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    source = np.zeros_like(f0)
    for harmonic in range(1, int(max_frequency / f0.min()) + 1):
        fade = np.clip((max_frequency - harmonic * f0) / 500.0, 0.0, 1.0)
        source += fade * np.sin(harmonic * phase) / harmonic
    return source


def formant_filter(signal: np.ndarray, formants: Sequence[float]) -> np.ndarray:
    """A cascade of Klatt resonators (unit gain at 0 Hz), one per formant."""
    for frequency, bandwidth in zip(formants, FORMANT_BANDWIDTHS):
        c = -np.exp(-2.0 * np.pi * bandwidth / SAMPLE_RATE)
        b = 2.0 * np.exp(-np.pi * bandwidth / SAMPLE_RATE) * np.cos(2.0 * np.pi * frequency / SAMPLE_RATE)
        signal = lfilter([1.0 - b - c], [1.0, -b, -c], signal)
    return signal


def vowel_sequence_filter(
    source: np.ndarray, vowels: Sequence[str], lead: int, counts: np.ndarray, trail: int, formant_scale: float
) -> np.ndarray:
    """Each syllable's vowel: the source through every vowel's resonators, cross-faded by syllable."""
    output = np.zeros_like(source)
    for vowel in sorted(set(vowels)):
        is_vowel = np.array([v == vowel for v in vowels], dtype=float)
        weight = smooth(per_sample_values(is_vowel, lead, counts, trail), 0.03)
        formants = [f * formant_scale for f in VOWEL_FORMANTS[vowel]]
        output += weight * formant_filter(source, formants)
    return output


def spectral_tilt(signal: np.ndarray, tilt: np.ndarray) -> np.ndarray:
    """Per-sample tilt in [-1, 1]: blend towards a one-pole low-pass (<0) or a pre-emphasis (>0)."""
    darker = lfilter([0.25], [1.0, -0.75], signal)
    brighter = 2.5 * lfilter([1.0, -0.75], [1.0], signal)
    return signal + np.clip(-tilt, 0, 1) * (darker - signal) + np.clip(tilt, 0, 1) * (brighter - signal)


def syllable_envelopes(
    lead: int, counts: np.ndarray, trail: int, stressed: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Per-sample vowel envelope (rise, hold, fall) and consonant-burst envelope at each onset."""
    starts = lead + np.concatenate([[0], np.cumsum(counts)[:-1]])
    total = lead + counts.sum() + trail
    syllable = np.full(total, -1)
    syllable[lead : lead + counts.sum()] = np.repeat(np.arange(len(counts)), counts)
    inside = syllable >= 0
    index = np.where(inside, syllable, 0)
    elapsed = (np.arange(total) - starts[index]) / SAMPLE_RATE
    remaining = counts[index] / SAMPLE_RATE - elapsed
    vowel = np.clip((elapsed - 0.02) / 0.03, 0, 1) * np.clip(remaining / 0.05, 0, 1)
    vowel *= np.where(stressed[index], 1.0, 0.7) * inside
    consonant = np.exp(-elapsed / 0.012) * (elapsed < 0.04) * inside
    return vowel, consonant


def synthesize_utterance(
    rng: np.random.Generator, speaker: Speaker, sentence: str, label: str, partial: bool
) -> Tuple[np.ndarray, int, int]:
    """One utterance as float32 samples (peak below 1) and its emotional span in samples."""
    vowels = sentence.lower()
    stressed = np.array([c.isupper() for c in sentence])
    carries = emotional_syllables(rng, len(sentence), partial)
    emotional, neutral = draw_style(rng, label), draw_style(rng, NEUTRAL)
    styles = [emotional if c else neutral for c in carries]
    lead, counts, trail = syllable_sample_counts(rng, speaker, np.array([s.duration_factor for s in styles]))
    num_samples = lead + counts.sum() + trail
    if partial:
        span_start = lead + counts[: carries.argmax()].sum()
        span_end = span_start + counts[carries].sum()
    else:
        span_start, span_end = 0, num_samples

    def style_track(field: str) -> np.ndarray:
        values = np.array([getattr(style, field) for style in styles])
        return smooth(per_sample_values(values, lead, counts, trail), 0.04)

    # Pitch: speaker base, class level, accents on stressed syllables, declination, jitter.
    accents = np.where(stressed, 1.0, -0.3) + rng.normal(0.0, 0.25, len(sentence))
    accent_track = smooth(per_sample_values(accents, lead, counts, trail), 0.08)
    declination = np.linspace(0.0, -2.0, num_samples)
    accent_size = style_track("pitch_range_semitones")
    semitones = style_track("pitch_semitones") + accent_size * accent_track + declination
    f0 = speaker.base_f0 * 2.0 ** (semitones / 12.0)
    f0 *= 1.0 + style_track("jitter") * block_noise(rng, num_samples)

    source = harmonic_source(f0) * (1.0 + style_track("shimmer") * block_noise(rng, num_samples))
    source += style_track("breathiness") * 0.5 * rng.standard_normal(num_samples)
    vowel_envelope, consonant_envelope = syllable_envelopes(lead, counts, trail, stressed)
    voiced = vowel_sequence_filter(
        source * vowel_envelope, vowels, lead, counts, trail, speaker.formant_scale
    )
    burst = lfilter([1.0, -0.95], [1.0], rng.standard_normal(num_samples)) * consonant_envelope
    speech = spectral_tilt(voiced + 0.3 * np.std(voiced) * burst, style_track("tilt"))

    # Peak-normalise the shape, then apply the style's level so that loudness stays a cue.
    level = np.minimum(0.3 * 10.0 ** (style_track("level_db") / 20.0), 0.9)
    wave = level * speech / np.abs(speech).max() + 10.0 ** (-60 / 20) * rng.standard_normal(num_samples)
    wave *= min(1.0, 0.95 / np.abs(wave).max())
    return wave.astype(np.float32), int(span_start), int(span_end)


def plan_partial_utterances(
    rng: np.random.Generator, labels: Sequence[str], partial_fraction: float
) -> np.ndarray:
    """round(fraction x count) of each non-neutral class's utterances, chosen at random, are partial."""
    partial = np.zeros(len(labels), dtype=bool)
    for label in CLASSES:
        if label == NEUTRAL:
            continue
        members = np.flatnonzero(np.array(labels) == label)
        chosen = rng.permutation(members)[: int(round(partial_fraction * len(members)))]
        partial[chosen] = True
    return partial


def write_demo_corpus(
    out_dir: str,
    seed: int = 0,
    utterances_per_speaker: int = DEFAULT_UTTERANCES_PER_SPEAKER,
    partial_fraction: float = DEFAULT_PARTIAL_FRACTION,
) -> List[DemoUtterance]:
    """Write wavs, metadata.csv, corpus.csv, spans.json and the demo split's manifests; the same seed, the same bytes.

    Utterance i of a speaker is class i mod 4 and sentence (i div 4) mod 6, so every class
    speaks every sentence equally often. Each utterance draws from its own random stream,
    seeded with (seed, speaker, index).
    """
    if utterances_per_speaker < len(CLASSES):
        raise FleaInputError(
            f"utterances per speaker must be at least {len(CLASSES)} (one per class), "
            f"got {utterances_per_speaker}"
        )
    if not 0.0 <= partial_fraction <= 1.0:
        raise FleaInputError(f"the partial fraction must be between 0 and 1, got {partial_fraction}")
    labels = [CLASSES[i % len(CLASSES)] for i in range(utterances_per_speaker)]
    sentences = [(i // len(CLASSES)) % len(SENTENCES) for i in range(utterances_per_speaker)]
    utterances = []
    progress = tqdm(total=len(SPEAKERS) * utterances_per_speaker, desc="synthesizing demo corpus", unit="wav")
    for speaker_index, speaker in enumerate(SPEAKERS):
        partial = plan_partial_utterances(
            np.random.default_rng([seed, speaker_index]), labels, partial_fraction
        )
        for index in range(utterances_per_speaker):
            rng = np.random.default_rng([seed, speaker_index, index])
            wave, span_start, span_end = synthesize_utterance(
                rng, speaker, SENTENCES[sentences[index]], labels[index], bool(partial[index])
            )
            path = f"wav/{speaker.name}/{speaker.name}_{index:03d}.wav"
            write_wav_atomically(os.path.join(out_dir, path), wave)
            utterances.append(
                DemoUtterance(
                    path=path,
                    label=labels[index],
                    speaker=speaker.name,
                    group=speaker.group,
                    split=split_of_speaker(speaker),
                    emotion_start=span_start / SAMPLE_RATE,
                    emotion_end=span_end / SAMPLE_RATE,
                    duration=len(wave) / SAMPLE_RATE,
                    sentence=sentences[index],
                    num_samples=len(wave),
                )
            )
            progress.update()
    progress.close()
    write_metadata(out_dir, utterances)
    write_demo_manifests(os.path.join(out_dir, "manifests"), os.path.join(out_dir, "wav"), utterances)
    return utterances


def write_wav_atomically(path: str, wave: np.ndarray) -> None:
    """16-bit PCM like IEMOCAP; written under a temporary name so a crash leaves no short file."""
    with atomic_outputs(path) as (partial,):
        sf.write(partial, wave, SAMPLE_RATE, format="WAV", subtype="PCM_16")


def csv_text(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def write_metadata(out_dir: str, utterances: Sequence[DemoUtterance]) -> None:
    """``metadata.csv`` (everything, spans included), ``corpus.csv`` for tools/prepare_corpus.py
    and ``spans.json`` (ZED-style spans) for tools/evaluate.py --spans.

    corpus.csv's group is the session: prepare_corpus.py leaves one group out per fold and
    needs two speakers in it, one to validate and one to test. Its fold 4 is the demo split.
    """
    write_text_atomically(
        os.path.join(out_dir, "metadata.csv"),
        csv_text(
            METADATA_COLUMNS,
            [
                [u.path, u.label, u.speaker, u.group, u.split,
                 f"{u.emotion_start:.4f}", f"{u.emotion_end:.4f}", f"{u.duration:.4f}", u.sentence]
                for u in utterances
            ],
        ),
    )
    write_text_atomically(
        os.path.join(out_dir, "corpus.csv"),
        csv_text(CORPUS_COLUMNS, [[u.path, u.label, u.speaker, u.group] for u in utterances]),
    )
    write_text_atomically(os.path.join(out_dir, SPANS_FILE), json.dumps(spans_document(utterances), indent=1) + "\n")


def spans_document(utterances: Sequence[DemoUtterance]) -> Dict[str, Dict[str, object]]:
    """Every utterance's emotional span as SpeechBrain's ZED recipe writes them: ``{utt_id:
    {"wav", "duration", "emotion": [{"emo", "start", "end"}]}}``, the wav relative to the
    corpus directory; neutral and fully emotional utterances span the whole file."""
    return {
        os.path.splitext(os.path.basename(u.path))[0]: {
            "wav": u.path,
            "duration": round(u.duration, 6),
            "emotion": [{"emo": u.label, "start": round(u.emotion_start, 6), "end": round(u.emotion_end, 6)}],
        }
        for u in utterances
    }


def write_demo_manifests(manifest_dir: str, audio_root: str, utterances: Sequence[DemoUtterance]) -> None:
    """``{split}.tsv``, ``.emo`` and ``.spk`` and ``dict.emo.txt``: the files fine-tuning reads.

    Written by the fold writer, sorted by path with the wav directory as audio root, as
    tools/prepare_corpus.py writes them, so these files equal that tool's fold 4 on corpus.csv.
    """
    audio_root = os.path.abspath(audio_root)
    ordered = sorted(utterances, key=lambda u: u.path)
    records = [
        Utterance(os.path.join(audio_root, os.path.relpath(u.path, "wav")), u.label, u.speaker, u.group, u.num_samples)
        for u in ordered
    ]
    for split in SPLITS:
        write_split(manifest_dir, split, [r for r, u in zip(records, ordered) if u.split == split], audio_root)
    write_dictionary(
        os.path.join(manifest_dir, "dict.emo.txt"), CLASSES, [r for r, u in zip(records, ordered) if u.split == "train"]
    )


def split_class_counts(utterances: Sequence[DemoUtterance]) -> Dict[str, Dict[str, int]]:
    counts = Counter((u.split, u.label) for u in utterances)
    return {split: {label: counts[split, label] for label in CLASSES} for split in SPLITS}


def format_split_counts(utterances: Sequence[DemoUtterance]) -> str:
    """split x class table, with the partial utterances of each split and its speakers."""
    rows = [f"{'split':6}" + "".join(f"{label:>6}" for label in CLASSES) + f"{'partial':>9}  speakers"]
    for split, row in split_class_counts(utterances).items():
        members = [u for u in utterances if u.split == split]
        partial = sum(u.emotion_end - u.emotion_start < u.duration - 1e-9 for u in members)
        speakers = ", ".join(sorted({u.speaker for u in members}))
        counts = "".join(f"{row[label]:>6}" for label in CLASSES)
        rows.append(f"{split:6}{counts}{partial:>9}  {speakers}")
    return "\n".join(rows)
