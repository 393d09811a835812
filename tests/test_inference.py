"""Recognising emotion in recordings: the inference API and tools/predict.py."""

import copy
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import filtfilt, firwin, resample_poly

import fairseq_flea  # noqa: F401
from conftest import assert_succeeded, run_python_tool
from fairseq_flea.io.audio import read_audio_for_model
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.units.layer_features import dump_layer_features
from fairseq_flea.hubert.forward import hubert_forward
from fairseq_flea.inference.recognizer import EmotionRecognizer, RecordingPrediction, SkippedRecording
from fairseq_flea.inference.segments import Segment, format_segments
from fairseq_flea.models.pooling import MeanPooling
from fairseq_flea.units.kmeans import assign_clusters, learn_kmeans_sklearn, load_features, save_kmeans
from fairseq_flea.io.manifest import read_manifest
from test_pretraining_errors import assert_one_line_error

CLUSTER_LAYER = 1
CLUSTERS = 6
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def split_paths(corpus, split="test"):
    manifest = read_manifest(str(corpus / f"{split}.tsv"))
    return [f"{manifest.root}/{name}" for name in manifest.names]


@pytest.fixture(scope="module")
def recognizer(attention_finetune):
    return EmotionRecognizer.load(str(attention_finetune[0]))


def skipped_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("skipped ")]


def test_api_and_cli_agree(attention_finetune, recognizer, emotion_corpus, tmp_path):
    checkpoint, _ = attention_finetune
    paths = split_paths(emotion_corpus)
    api = recognizer.predict_recordings(paths)
    assert all(isinstance(p, RecordingPrediction) and p.notes == [] for p in api)
    # On 16 kHz mono files the tolerant reader changes nothing: same as the strict evaluation path.
    strict = recognizer.predict_files(paths)
    assert all(np.array_equal(a.probabilities, s.probabilities) for a, s in zip(api, strict))

    result = run_python_tool("predict.py", checkpoint, *paths, "--json", tmp_path / "p.json", "--csv", tmp_path / "p.csv")
    assert_succeeded(result)
    document = json.loads((tmp_path / "p.json").read_text())
    assert document["class_names"] == recognizer.class_names and document["skipped"] == []
    cli = document["predictions"]
    assert [entry["file"] for entry in cli] == paths
    for entry, expected in zip(cli, api):
        assert entry["predicted_class"] == expected.predicted_class
        probabilities = np.array([entry["probabilities"][name] for name in recognizer.class_names])
        assert np.abs(probabilities - expected.probabilities).max() < 1e-5
        assert np.abs(np.array(entry["frame_weights"]) - expected.frame_weights).max() < 1e-5
        assert abs(sum(entry["frame_weights"]) - 1) < 1e-4
        assert_exact_decomposition(entry, document)
        assert entry["duration"] == read_manifest(str(emotion_corpus / "test.tsv")).num_samples[paths.index(entry["file"])] / 16000
        assert_segments_tile(entry["segments"], entry["duration"], recognizer.class_names)
    assert document["frame_seconds"] == 0.02 and document["receptive_field_seconds"] == 0.025
    assert document["segment_options"] == {"median_frames": 5, "min_segment_seconds": 0.3, "single_span": False}
    predicted = {p.path: p.predicted_class for p in api}
    assert len(set(predicted.values())) > 1  # a model that always says the same would agree trivially

    csv_rows = [line.split(",") for line in (tmp_path / "p.csv").read_text().splitlines()]
    assert csv_rows[0] == ["file", "predicted_class", *(f"p_{n}" for n in recognizer.class_names), "notes", "segments"]
    assert {row[0]: row[1] for row in csv_rows[1:]} == predicted
    assert [row[-1] for row in csv_rows[1:]] == [format_segments([Segment(**s) for s in e["segments"]]) for e in cli]
    table = result.stdout.splitlines()
    assert table[0].split() == ["file", "predicted", *recognizer.class_names, "segments", "notes"]
    assert {line.split()[0]: line.split()[1] for line in table[1:]} == predicted


def assert_exact_decomposition(entry, document):
    """logits = sum_i w_i (W x_i + b) to 1e-4 in fp32, the weights sum to 1, and the
    probabilities are the logits' softmax."""
    logits, frame_logits, weights = (np.array(entry[k], dtype=np.float64) for k in ("logits", "frame_logits", "frame_weights"))
    assert frame_logits.shape == (len(weights), len(document["class_names"]))
    assert np.abs(weights @ frame_logits - logits).max() < 1e-4
    assert abs(weights.sum() - 1) < 1e-5 and weights.min() >= 0
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.abs(softmax - [entry["probabilities"][n] for n in document["class_names"]]).max() < 1e-6


def assert_segments_tile(segments, duration, class_names):
    """Every instant of the file in exactly one segment: consecutive, from 0 to the duration."""
    assert segments[0]["start"] == 0 and abs(segments[-1]["end"] - duration) < 1e-6
    assert all(a["end"] == b["start"] and a["emo"] != b["emo"] for a, b in zip(segments, segments[1:]))
    assert all(s["end"] > s["start"] and s["emo"] in class_names for s in segments)


def test_mean_pooling_decomposes_with_weights_one_over_t(recognizer, emotion_corpus):
    """The same encoder and head with mean pooling: weights 1/T, the logits still the weighted sum."""
    model = copy.deepcopy(recognizer.model)
    model.pooling = MeanPooling()
    mean = EmotionRecognizer(model, recognizer.class_names, recognizer.sample_rate, recognizer.normalize, recognizer.device)
    for prediction in mean.predict_files(split_paths(emotion_corpus)[:4], batch_seconds=3):
        weights = prediction.frame_weights
        assert np.allclose(weights, 1 / len(weights), atol=1e-7)
        assert np.abs(weights.astype(np.float64) @ prediction.frame_logits - prediction.logits).max() < 1e-4
        assert prediction.frame_logits.shape == (len(weights), 4)


def write_16k_mono_and_44k_stereo(source, mono_path, stereo_path):
    """A corpus file low-passed at 7 kHz as the 16 kHz mono original, and that at 44.1 kHz in two
    slightly different channels averaging to it.

    A real 16 kHz recording has passed its own anti-alias filter; the corpus's white noise
    reaches 8 kHz, where resampling's filter must cut, and this tiny model's near-tie
    predictions move with noise of that size (about 1e-3 rms), resampling or not.
    """
    audio, rate = sf.read(source, dtype="float64")
    mono = filtfilt(firwin(101, 7000, fs=rate), [1.0], audio)
    sf.write(mono_path, mono, rate, subtype="FLOAT")
    upsampled = resample_poly(mono, 441, 160)
    difference = 0.01 * np.random.default_rng(0).standard_normal(len(upsampled))
    sf.write(stereo_path, np.stack([upsampled + difference, upsampled - difference], axis=1), 44100, subtype="FLOAT")


def test_resampled_stereo_predicts_like_the_16k_mono_original(attention_finetune, recognizer, emotion_corpus, tmp_path):
    sources = split_paths(emotion_corpus)[:8]
    originals = [str(tmp_path / f"mono_{i}.wav") for i in range(len(sources))]
    converted = [str(tmp_path / f"stereo_{i}.wav") for i in range(len(sources))]
    for source, mono, stereo in zip(sources, originals, converted):
        write_16k_mono_and_44k_stereo(source, mono, stereo)
    for mono, stereo in zip(recognizer.predict_recordings(originals), recognizer.predict_recordings(converted)):
        assert mono.notes == []
        assert stereo.notes == ["downmixed 2 channels", "resampled 44100 Hz -> 16000 Hz"]
        assert stereo.predicted_class == mono.predicted_class
        assert np.abs(stereo.probabilities - mono.probabilities).max() < 0.03
        assert abs(len(stereo.frame_weights) - len(mono.frame_weights)) <= 1

    result = run_python_tool("predict.py", attention_finetune[0], *converted, "--csv", "-")
    assert_succeeded(result)
    rows = result.stdout.splitlines()[1:]
    assert len(rows) == len(converted)
    assert all(",downmixed 2 channels; resampled 44100 Hz -> 16000 Hz," in row for row in rows)


def test_short_audio_is_judged_at_the_model_rate(tmp_path):
    """One frame is 400 samples at 16 kHz: 200 samples at 8 kHz are enough, 199 are not."""
    sf.write(tmp_path / "enough.wav", np.full((200, 3), 0.1), 8000)
    sf.write(tmp_path / "short.wav", np.full(199, 0.1), 8000)
    waveform, notes = read_audio_for_model(str(tmp_path / "enough.wav"), 16000)
    assert len(waveform) == 400 and waveform.dtype == np.float32
    assert notes == ["downmixed 3 channels", "resampled 8000 Hz -> 16000 Hz"]
    with pytest.raises(FleaInputError, match="only 199 samples at 8000 Hz, shorter than one frame"):
        read_audio_for_model(str(tmp_path / "short.wav"), 16000)


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "notes.wav").write_text("not audio at all\n")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    return {
        "missing": str(tmp_path / "missing.wav"),
        "not audio": str(tmp_path / "notes.wav"),
        "empty": str(tmp_path / "empty.wav"),
    }


def test_unusable_files_are_skipped_and_the_rest_predicted(attention_finetune, recognizer, emotion_corpus, bad_files):
    good = split_paths(emotion_corpus)[:2]
    files = [bad_files["missing"], good[0], bad_files["not audio"], bad_files["empty"], good[1]]
    result = run_python_tool("predict.py", attention_finetune[0], *files, "--json", "-")
    assert_succeeded(result)
    assert "Traceback" not in result.stderr
    missing, not_audio, empty = skipped_lines(result.stderr)
    assert missing == f"skipped {bad_files['missing']}: audio file not found"
    assert not_audio.startswith(f"skipped {bad_files['not audio']}: unreadable audio (")
    assert empty == f"skipped {bad_files['empty']}: only 0 samples, shorter than one frame (400 samples)"
    document = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert [p["file"] for p in document["predictions"]] == good
    assert [s["file"] for s in document["skipped"]] == [bad_files[k] for k in ("missing", "not audio", "empty")]

    api = recognizer.predict_recordings(files)
    assert [type(r) for r in api] == [SkippedRecording, RecordingPrediction, SkippedRecording, SkippedRecording, RecordingPrediction]
    with pytest.raises(FleaInputError, match="only 0 samples"):
        recognizer.predict_recording(bad_files["empty"])


def test_no_usable_file_exits_1(attention_finetune, bad_files):
    result = run_python_tool("predict.py", attention_finetune[0], *bad_files.values())
    assert_one_line_error(result, "error: none of the 3 files could be used")
    assert result.returncode == 1 and len(skipped_lines(result.stderr)) == 3
    assert result.stdout == ""


def test_a_checkpoint_that_is_not_a_classifier_is_refused(scratch_run, emotion_corpus):
    result = run_python_tool("predict.py", scratch_run[0], split_paths(emotion_corpus)[0])
    assert_one_line_error(result, "error:", "not an emotion classifier", "'hubert'")
    assert result.returncode == 1 and result.stdout == ""


def test_inference_checkpoint_predicts_the_same(attention_finetune, recognizer, emotion_corpus, tmp_path):
    inference_path = tmp_path / "inference.pt"
    assert_succeeded(run_python_tool("convert_checkpoint.py", "inference", attention_finetune[0], inference_path))
    converted = EmotionRecognizer.load(str(inference_path))
    paths = split_paths(emotion_corpus)[:6]
    for a, b in zip(recognizer.predict_recordings(paths), converted.predict_recordings(paths)):
        assert a.predicted_class == b.predicted_class
        assert np.abs(a.probabilities - b.probabilities).max() < 1e-6
        assert np.abs(a.frame_weights - b.frame_weights).max() < 1e-6


def test_plot_writes_one_png_per_predicted_file(attention_finetune, emotion_corpus, bad_files, tmp_path):
    first, second = split_paths(emotion_corpus)[:2]
    same_name = tmp_path / "other" / first.rsplit("/", 1)[1]
    same_name.parent.mkdir()
    shutil.copy(second, same_name)
    files = [first, bad_files["missing"], str(same_name), second]
    duration = sf.info(second).frames / 16000
    spans = tmp_path / "spans.json"  # the reference span of one file, shaded in its plot
    spans.write_text(json.dumps({"u4": {"wav": "elsewhere/" + second.rsplit("/", 1)[1], "duration": duration,
                                        "emotion": [{"emo": "angry", "start": 0.2, "end": duration / 2}]},
                                 "not_given": {"wav": "x/not_given.wav", "duration": 1.0, "emotion": []}}))
    result = run_python_tool("predict.py", attention_finetune[0], *files, "--plot", tmp_path / "plots",
                             "--spans", spans, "--single-span", "--csv", "-")
    assert_succeeded(result)
    segments = [row.rsplit(",", 1)[1].split("; ") for row in result.stdout.splitlines()[1:]]
    assert all(sum(not s.startswith("neu ") for s in row) <= 1 for row in segments)  # one non-neutral span at most
    stem = same_name.stem
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == [f"1_{stem}.png", f"3_{stem}.png", f"4_{second.rsplit('/', 1)[1][:-4]}.png"]
    for name in pngs:
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000


@pytest.fixture(scope="module")
def cluster_model(attention_finetune, emotion_corpus, tmp_path_factory):
    """k-means of the classifier's layer-1 features (phase 2's recipe), and the test split's features."""
    work = tmp_path_factory.mktemp("clusters")
    for split in ("train", "test"):
        dump_layer_features(str(emotion_corpus), split, str(attention_finetune[0]), CLUSTER_LAYER, 1, 0, str(work))
    model = learn_kmeans_sklearn(load_features(str(work), "train", 1), CLUSTERS, n_init=3)
    km_path = work / "km.bin"
    save_kmeans(model, str(km_path))
    test_features = np.load(work / "test_0_1.npy")
    lengths = [int(n) for n in (work / "test_0_1.len").read_text().split()]
    return km_path, np.split(test_features, np.cumsum(lengths)[:-1]), model.cluster_centers_


def test_frame_cluster_ids_match_the_dumped_features(recognizer, cluster_model, emotion_corpus):
    km_path, dumped, centers = cluster_model
    clusters = recognizer.load_frame_clusters(str(km_path), CLUSTER_LAYER)
    predictions = recognizer.predict_recordings(split_paths(emotion_corpus), clusters, batch_seconds=10)
    used = set()
    for prediction, features in zip(predictions, dumped):
        assert len(prediction.cluster_ids) == len(prediction.frame_weights) == len(features)
        assert prediction.cluster_ids.min() >= 0 and prediction.cluster_ids.max() < CLUSTERS
        assert np.array_equal(prediction.cluster_ids, assign_clusters(features, centers))
        used.update(prediction.cluster_ids.tolist())
    assert len(used) > 1
    # And on features computed here, one utterance alone.
    wave = torch.from_numpy(sf.read(predictions[0].path, dtype="float32")[0])
    with torch.no_grad():
        features, _ = hubert_forward(recognizer.model.encoder, wave[None], torch.tensor([len(wave)]), CLUSTER_LAYER)
    assert np.array_equal(predictions[0].cluster_ids, assign_clusters(features[0].numpy(), centers))


def test_cluster_model_must_fit_the_encoder(recognizer, cluster_model, tmp_path):
    km_path, _, centers = cluster_model
    with pytest.raises(FleaInputError, match="out of range"):
        recognizer.load_frame_clusters(str(km_path), 3)  # the tiny encoder has 2 layers
    wrong = tmp_path / "km_wrong_dim.bin"
    model = learn_kmeans_sklearn(np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32), 3, n_init=1)
    save_kmeans(model, str(wrong))
    with pytest.raises(FleaInputError, match="dimension 7"):
        recognizer.load_frame_clusters(str(wrong), CLUSTER_LAYER)


def test_cli_cluster_ids_and_plot(attention_finetune, recognizer, cluster_model, emotion_corpus, tmp_path):
    km_path, _, _ = cluster_model
    paths = split_paths(emotion_corpus)[:3]
    result = run_python_tool(
        "predict.py", attention_finetune[0], *paths, "--json", "-",
        "--clusters", km_path, "--cluster-layer", CLUSTER_LAYER, "--plot", tmp_path / "plots",
    )
    assert_succeeded(result)
    document = json.loads(result.stdout)
    assert document["clusters"] == {"km_path": str(km_path), "layer": CLUSTER_LAYER}
    expected = recognizer.predict_recordings(paths, recognizer.load_frame_clusters(str(km_path), CLUSTER_LAYER))
    assert [p["cluster_ids"] for p in document["predictions"]] == [p.cluster_ids.tolist() for p in expected]
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3

    missing_layer = run_python_tool("predict.py", attention_finetune[0], paths[0], "--clusters", km_path)
    assert_one_line_error(missing_layer, "error: --clusters and --cluster-layer go together")
