"""Frame-level scores: segments from frame logits, EDER against SpeechBrain's own function,
attention in span, and the checks of ZED-style spans files. No model: these run in a second."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fairseq_flea.evaluation.frame_metrics import (
    emotion_diarization_error,
    reference_segments,
    summarise_frame_scores,
    score_utterance,
    weight_in_spans,
)
from fairseq_flea.inference.segments import (
    FrameTiming,
    Segment,
    SegmentOptions,
    absorb_short_runs,
    best_single_span,
    emotion_segments,
    frame_labels,
    labels_to_segments,
    neutral_class,
)
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.spans import EmotionEvent, SpanEntry, event_class, match_spans, read_spans

CLASSES = ["ang", "hap", "neu", "sad"]  # first letters a, h, n, s: SpeechBrain's EDER compares first letters
NEUTRAL = 2
HUBERT = FrameTiming(step=0.02, receptive_field=0.025)
ZED_EMOTIONS = ["angry", "happy", "sad", "neutral"]


def speechbrain_eder_module():
    """speechbrain/utils/EDER.py of the installed speechbrain (the test extra), loaded from its
    file: the package's __init__ imports torchaudio, which does not load beside this torch."""
    spec = importlib.util.find_spec("speechbrain")
    if spec is None:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "utils" / "EDER.py"
    module_spec = importlib.util.spec_from_file_location("speechbrain_utils_EDER", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


SPEECHBRAIN = speechbrain_eder_module()
needs_speechbrain = pytest.mark.skipif(SPEECHBRAIN is None, reason="speechbrain (the test extra) is not installed")


def window_segments(labels, window, stride, class_names):
    """Frame labels as SpeechBrain's EDER places them: frame i covers [i*stride, i*stride+window],
    adjacent equal labels merged, the overlap of different ones split in half."""
    edges = np.arange(len(labels) + 1) * stride + (window - stride) / 2
    edges[0], edges[-1] = 0.0, (len(labels) - 1) * stride + window
    return labels_to_segments(np.asarray(labels), edges, class_names)


def entry(duration, emo, start, end, utt_id="u1"):
    return SpanEntry(utt_id, f"/data/{utt_id}.wav", duration, (EmotionEvent(emo, start, end),))


def our_eder(segments, span_entry, class_names, neutral):
    reference = reference_segments(span_entry, class_names, neutral, "spans.json")
    return emotion_diarization_error(segments, reference, span_entry.duration)


# --- SpeechBrain's docstring examples (speechbrain/utils/EDER.py), worked here without it --------


def test_eder_docstring_example():
    """EDER(["n","n","n","a","a","a"], "spk1_1", 1.22, [angry 0.39-1.10], 0.2, 0.2) = 0.2704918032786885."""
    segments = window_segments([1, 1, 1, 0, 0, 0], 0.2, 0.2, ["a", "n"])
    assert our_eder(segments, entry(1.22, "angry", 0.39, 1.10), ["a", "n"], "n") == pytest.approx(0.2704918032786885, abs=1e-6)


def test_reference_docstring_example():
    """reference_to_lol("u1", 8.0, [angry 1.016-6.336]) = n 0-1.016, a 1.016-6.336, n 6.336-8.0."""
    reference = reference_segments(entry(8.0, "angry", 1.016, 6.336), ["a", "n"], "n", "spans.json")
    assert reference == [Segment("n", 0, 1.016), Segment("a", 1.016, 6.336), Segment("n", 6.336, 8.0)]


def test_distribute_overlap_docstring_example():
    """Overlapping windows of different labels split their overlap in half (distribute_overlap):
    windows 5.5-9 s1 and 8-11 s2 meet at 8.5; frame windows of 0.025 s every 0.02 s at the
    midpoints of their overlaps, which is where FrameTiming puts a frame's edges."""
    segments = window_segments([0, 0, 1, 1, 1, 0], 0.025, 0.02, ["s1", "s2"])
    assert [(s.emo, round(s.start, 6), round(s.end, 6)) for s in segments] == [
        ("s1", 0.0, 0.0425), ("s2", 0.0425, 0.1025), ("s1", 0.1025, 0.125)]
    assert np.allclose(HUBERT.edges(6, 0.125), [0.0, 0.0225, 0.0425, 0.0625, 0.0825, 0.1025, 0.125])


# --- against SpeechBrain's own EDER function ------------------------------------------------------


def random_utterance(rng, tail_seconds):
    """Random frame labels (runs), a duration and one ZED-style event."""
    frames = int(rng.integers(30, 300))
    labels = np.repeat(rng.integers(0, 4, 12), rng.integers(1, 40, 12))[:frames]
    frames = len(labels)
    duration = (frames - 1) * HUBERT.step + HUBERT.receptive_field + tail_seconds
    start, end = sorted(rng.uniform(0, duration, 2))
    if rng.random() < 0.2:
        start, end = 0.0, duration  # the whole utterance, as ZED's fully emotional or neutral ones
    return labels, duration, {"emo": str(rng.choice(ZED_EMOTIONS)), "start": float(start), "end": float(end)}


@needs_speechbrain
def test_eder_equals_speechbrain_on_frames():
    """Frame-wise labels (window 25 ms, stride 20 ms, as HuBERT frames): our segments and
    SpeechBrain's EDER agree to 1e-6 on 200 random utterances that end with their last frame."""
    rng = np.random.default_rng(0)
    for index in range(200):
        labels, duration, event = random_utterance(rng, tail_seconds=0.0)
        segments = labels_to_segments(labels, HUBERT.edges(len(labels), duration), CLASSES)
        ours = our_eder(segments, entry(duration, **event), CLASSES, "neu")
        theirs = SPEECHBRAIN.EDER([CLASSES[k][0] for k in labels], f"u{index}", duration, [event], 0.025, 0.02)
        assert ours == pytest.approx(theirs, abs=1e-6), index


@needs_speechbrain
def test_eder_equals_speechbrain_on_the_same_segments():
    """Segments that tile files with an unseen tail (< 20 ms after the last frame, given to the
    last segment), sampled for SpeechBrain on a 2.5 ms grid that every segment edge lies on."""
    rng = np.random.default_rng(1)
    grid = 0.0025
    for index in range(200):
        labels, duration, event = random_utterance(rng, tail_seconds=float(rng.uniform(0, 0.02)))
        segments = emotion_segments(rng.standard_normal((len(labels), 4)) + 3 * np.eye(4)[labels], duration, CLASSES, HUBERT,
                                    SegmentOptions(median_frames=3, min_segment_seconds=0.1), NEUTRAL)
        centres = (np.arange(math.ceil(duration / grid)) + 0.5) * grid
        ends = np.array([s.end for s in segments])
        on_grid = [segments[min(i, len(segments) - 1)].emo[0] for i in np.searchsorted(ends, centres, side="right")]
        theirs = SPEECHBRAIN.EDER(on_grid, f"u{index}", duration, [event], grid, grid)
        assert our_eder(segments, entry(duration, **event), CLASSES, "neu") == pytest.approx(theirs, abs=1e-6), index


# --- segments -------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    SegmentOptions(median_frames=1, min_segment_seconds=0.0),
    SegmentOptions(),
    SegmentOptions(median_frames=9, min_segment_seconds=0.5, single_span=True),
])
def test_segments_tile_the_file(options):
    rng = np.random.default_rng(2)
    for _ in range(50):
        frames = int(rng.integers(1, 200))
        duration = (frames - 1) * 0.02 + 0.025 + float(rng.uniform(0, 0.0199))
        segments = emotion_segments(rng.standard_normal((frames, 4)), duration, CLASSES, HUBERT, options, NEUTRAL)
        assert segments[0].start == 0.0 and segments[-1].end == pytest.approx(duration, abs=1e-12)
        assert all(a.end == b.start and a.emo != b.emo for a, b in zip(segments, segments[1:]))
        assert all(s.end > s.start for s in segments)
        if options.single_span:
            assert sum(s.emo != "neu" for s in segments) <= 1
        labels = frame_labels(rng.standard_normal((frames, 4)), options, 0.02, NEUTRAL)
        run_lengths = np.diff(np.flatnonzero(np.diff(labels, prepend=-1, append=-1)))
        assert len(run_lengths) == 1 or run_lengths.min() >= round(options.min_segment_seconds / 0.02)


def test_the_median_filter_removes_a_lone_frame_and_short_runs_join_the_better_neighbour():
    logits = np.tile([0.0, 0.0, 1.0, 0.0], (20, 1))  # neutral ...
    logits[10] = [3.0, 0.0, 0.0, 0.0]  # ... one angry frame
    assert set(frame_labels(logits, SegmentOptions(median_frames=3, min_segment_seconds=0), 0.02, NEUTRAL)) == {2}
    assert frame_labels(logits, SegmentOptions(median_frames=1, min_segment_seconds=0), 0.02, NEUTRAL)[10] == 0
    labels = np.array([0] * 10 + [1] * 2 + [3] * 10)
    scores = np.zeros((22, 4))
    scores[10:12, 3] = 1.0  # the short hap run looks more like sad than like ang
    assert absorb_short_runs(labels, scores, 5).tolist() == [0] * 10 + [3] * 12


def test_single_span_takes_the_best_margin_over_neutral():
    scores = np.zeros((10, 4))
    scores[:, NEUTRAL] = 1.0
    scores[2:5, 0] = 3.0  # ang margin 2 x 3 = 6
    scores[6:9, 3] = 2.5  # sad margin 1.5 x 3 = 4.5
    assert best_single_span(scores, NEUTRAL).tolist() == [2, 2, 0, 0, 0, 2, 2, 2, 2, 2]
    assert set(best_single_span(np.tile([0, 0, 1.0, 0], (5, 1)), NEUTRAL)) == {NEUTRAL}


def test_neutral_class_and_event_names():
    assert neutral_class(CLASSES) == NEUTRAL and neutral_class(["calm", "neutral2"], "calm") == 0
    with pytest.raises(FleaInputError, match="--neutral-label"):
        neutral_class(["ang", "calm"])
    assert [event_class(name, CLASSES, "u1", "s.json") for name in ZED_EMOTIONS + ["Neutral", "hap"]] == [
        "ang", "hap", "sad", "neu", "neu", "hap"]
    with pytest.raises(FleaInputError, match="s.json: utterance u7: emotion 'fear' is none of the model's classes"):
        event_class("fear", CLASSES, "u7", "s.json")


# --- attention in span ----------------------------------------------------------------------------


def test_attention_in_span_and_its_uniform_baseline():
    edges = HUBERT.edges(10, 0.205)  # frame i owns [0.02 i + 0.0025, 0.02 (i+1) + 0.0025), ends at 0 and 0.205
    weights = np.array([0, 0, 0, 0.25, 0.25, 0.25, 0.25, 0, 0, 0])
    span = [Segment("ang", edges[3], edges[7])]
    assert weight_in_spans(weights, edges, span) == pytest.approx(1.0)
    assert weight_in_spans(np.full(10, 0.1), edges, span) == pytest.approx(0.4)
    half_frame = [Segment("ang", edges[3], (edges[3] + edges[4]) / 2)]
    assert weight_in_spans(weights, edges, half_frame) == pytest.approx(0.125)

    scores = [score_utterance(entry(0.205, "angry", edges[3], edges[7], utt_id=f"u{i}"), [Segment("neu", 0, 0.205)],
                              ["neu"] * 10, weights, edges, np.arange(10) * 0.02 + 0.0125, CLASSES, "neu", "s.json")
              for i in range(2)]
    whole = score_utterance(entry(0.205, "neutral", 0.0, 0.205), [Segment("neu", 0, 0.205)], ["neu"] * 10, weights,
                            edges, np.arange(10) * 0.02 + 0.0125, CLASSES, "neu", "s.json")
    assert scores[0].eder == pytest.approx(0.08 / 0.205) and scores[0].frame_accuracy == pytest.approx(0.6)
    assert whole.eder == pytest.approx(0.0) and whole.attention_in_span is None  # neutral throughout
    summary = summarise_frame_scores([*scores, whole])
    assert summary["attention_in_span"] == pytest.approx(1.0) and summary["uniform_in_span"] == pytest.approx(0.4)
    assert summary["span_utterances"] == 3 and summary["partial_span_utterances"] == 2
    assert summary["eder"] == pytest.approx(2 * 0.08 / 0.205 / 3)


# --- spans files ------------------------------------------------------------------------------------


def write_spans(path, document):
    path.write_text(json.dumps(document))
    return str(path)


ZED_ENTRY = {"wav": "{data_root}/Session1/a_001.wav", "duration": 2.0, "emotion": [{"emo": "angry", "start": 0.5, "end": 1.5}]}


@pytest.mark.parametrize("change, message", [
    ({"emotion": [{"emo": "angry", "start": 1.5, "end": 0.5}]}, "utterance a1: emotion 1 (angry) ends at 0.5 s, not after its start 1.5 s"),
    ({"emotion": [{"emo": "angry", "start": 0.5, "end": 2.5}]}, "utterance a1: emotion angry (0.5-2.5 s) lies outside the file"),
    ({"emotion": [{"emo": "angry", "start": -0.1, "end": 1.0}]}, "utterance a1: emotion angry (-0.1-1.0 s) lies outside the file"),
    ({"emotion": [{"emo": "angry", "start": 0.1, "end": 1.0}, {"emo": "sad", "start": 0.9, "end": 1.2}]}, "utterance a1: emotions angry"),
    ({"duration": "long"}, "utterance a1: 'duration' must be a number"),
    ({"emotion": [{"emo": "angry", "start": 0.5}]}, "utterance a1: emotion 1 must have 'emo', 'start' and 'end'"),
])
def test_bad_spans_name_the_utterance(tmp_path, change, message):
    with pytest.raises(FleaInputError, match="^" + str(tmp_path / "s.json").replace(".", r"\.") + ": " + message.replace("(", r"\(").replace(")", r"\)")):
        read_spans(write_spans(tmp_path / "s.json", {"a1": {**ZED_ENTRY, **change}}))


def test_spans_are_matched_by_file_name(tmp_path):
    path = write_spans(tmp_path / "s.json", {"a1": ZED_ENTRY, "b2": {**ZED_ENTRY, "wav": "x/b_002.flac"}})
    spans = read_spans(path)
    files = ["/corpus/wav/b_002.wav", "/corpus/wav/a_001.wav", "/corpus/wav/c_003.wav"]
    matched = match_spans(spans, files, [2.0, 1.995, 3.0], path)
    assert {position: e.utt_id for position, e in matched.items()} == {0: "b2", 1: "a1"}
    assert matched[1].duration == 1.995 and matched[1].events[0].end == 1.5  # on the file's own duration
    with pytest.raises(FleaInputError, match="utterance b2: no audio file called 'b_002'"):
        match_spans(spans, files[1:], [1.995, 3.0], path)
    assert list(match_spans(spans, files[1:], [1.995, 3.0], path, every_entry=False)) == [0]
    with pytest.raises(FleaInputError, match="utterance a1: duration 2.0 s, but /corpus/wav/a_001.wav lasts 1.200 s"):
        match_spans(spans, files, [2.0, 1.2, 3.0], path)
    with pytest.raises(FleaInputError, match="utterances a1 and c3 both name a wav called 'a_001'"):
        read_spans(write_spans(tmp_path / "t.json", {"a1": ZED_ENTRY, "c3": ZED_ENTRY}))
    (tmp_path / "v.json").write_text("{not json")
    with pytest.raises(FleaInputError, match="v.json: not a JSON spans file"):
        read_spans(str(tmp_path / "v.json"))
