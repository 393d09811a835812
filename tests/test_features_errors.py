"""Bad input to the feature and k-means tools: one line naming the file, exit 1, no output left."""


import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import run_python_tool
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.units.layer_features import dump_layer_features
from fairseq_flea.units.mfcc import dump_mfcc_features
from fairseq_flea.io.audio import read_audio_for_model
from fairseq_flea.units.kmeans import check_cluster_count, learn_kmeans_faiss, load_features, save_kmeans

RATE = 16000



def assert_clean_failure(result, *fragments):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(fragment in errors[0] for fragment in fragments), result.stderr[-2000:]


def write_manifest(directory, bad_name=None, write_bad=None):
    """Two good utterances around an optional bad one, in the middle of the shard."""
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    names = ["good_a.wav", bad_name, "good_b.wav"] if bad_name else ["good_a.wav", "good_b.wav"]
    for name in ("good_a.wav", "good_b.wav"):
        sf.write(directory / name, (0.1 * rng.standard_normal(RATE)).astype(np.float32), RATE)
    if write_bad:
        write_bad(directory / bad_name)
    lines = [str(directory)] + [f"{name}\t{RATE}" for name in names]
    (directory / "train.tsv").write_text("\n".join(lines) + "\n")
    return directory


BAD_AUDIO = {
    "missing": (None, "audio file not found"),
    "corrupt": (lambda path: path.write_bytes(b"RIFF not really a wav"), "unreadable audio"),
    "8 kHz": (lambda path: sf.write(path, np.zeros(8000, np.float32), 8000), "sample rate is 8000 Hz"),
    "stereo": (lambda path: sf.write(path, np.zeros((RATE, 2), np.float32), RATE), "has 2 channels"),
    "too short": (lambda path: sf.write(path, np.zeros(200, np.float32), RATE), "only 200 samples"),
    "NaN samples": (
        lambda path: sf.write(path, np.where(np.arange(RATE) % 97 == 0, np.nan, 0.1).astype(np.float32), RATE,
                              subtype="FLOAT"),
        "165 samples are NaN or infinite",
    ),
}


@pytest.mark.parametrize("problem", BAD_AUDIO)
def test_bad_audio_is_named_and_nothing_is_written(problem, scratch_run, tmp_path):
    writer, message = BAD_AUDIO[problem]
    data = write_manifest(tmp_path / "data", "bad.wav", writer)
    out = tmp_path / "features"
    with pytest.raises(FleaInputError) as layer_error:
        dump_layer_features(str(data), "train", str(scratch_run[0]), 1, 1, 0, str(out))
    with pytest.raises(FleaInputError) as mfcc_error:
        dump_mfcc_features(str(data), "train", 1, 0, str(out))
    for error in (layer_error, mfcc_error):
        assert str(data / "bad.wav") in str(error.value) and message in str(error.value)
    assert not out.exists() or list(out.iterdir()) == []


def test_dump_feature_cli_reports_a_bad_wav_in_one_line(scratch_run, tmp_path):
    data = write_manifest(tmp_path / "data", "bad.wav", BAD_AUDIO["corrupt"][0])
    result = run_python_tool("dump_feature.py", data, "train", scratch_run[0], 1, 1, 0, tmp_path / "features")
    assert_clean_failure(result, str(data / "bad.wav"), "unreadable audio")
    assert not (tmp_path / "features" / "train_0_1.npy").exists()


def test_layer_out_of_range(scratch_run, tmp_path):
    data = write_manifest(tmp_path / "data")
    result = run_python_tool("dump_feature.py", data, "train", scratch_run[0], 3, 1, 0, tmp_path / "features")
    assert_clean_failure(result, str(scratch_run[0]), "layer 3 is out of range", "1..2")


def test_checkpoint_of_an_unknown_kind(scratch_run, tmp_path):
    state = torch.load(scratch_run[0], map_location="cpu")
    state["cfg"]["model"]["_name"] = "wav2vec2"
    other = tmp_path / "wav2vec2.pt"
    torch.save(state, other)
    data = write_manifest(tmp_path / "data")
    with pytest.raises(FleaInputError, match="checkpoint of an unknown kind.*'wav2vec2'"):
        dump_layer_features(str(data), "train", str(other), 1, 1, 0, str(tmp_path / "features"))


def test_more_clusters_than_frames(tmp_path):
    data = write_manifest(tmp_path / "data")
    dump_mfcc_features(str(data), "train", 1, 0, str(tmp_path / "features"))
    frames = len(load_features(str(tmp_path / "features"), "train", 1))
    for backend in ("sklearn", "faiss"):  # faiss counts the frames without loading them
        result = run_python_tool("learn_kmeans.py", tmp_path / "features", "train", 1, tmp_path / "km.bin", 500,
                                 "--backend", backend)
        assert_clean_failure(result, "500 clusters requested", f"only {frames} frames")
        assert not (tmp_path / "km.bin").exists()
    with pytest.raises(FleaInputError):
        check_cluster_count(np.zeros((3, 2), np.float32), 4, "three frames")


def test_non_finite_audio_is_refused_for_prediction_too(tmp_path):
    path = tmp_path / "inf.wav"
    sf.write(path, np.full(2 * RATE, np.inf, np.float32), RATE, subtype="FLOAT")
    with pytest.raises(FleaInputError, match=f"{path}: 32000 samples are NaN or infinite"):
        read_audio_for_model(str(path), RATE)


def write_feature_shard(directory, features):
    directory.mkdir(exist_ok=True)
    np.save(directory / "train_0_1.npy", features)
    (directory / "train_0_1.len").write_text(f"{len(features)}\n")
    return directory


def test_non_finite_features_are_neither_clustered_nor_labelled(tmp_path):
    features = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    features[10, 2] = np.nan
    shard = write_feature_shard(tmp_path / "features", features)
    result = run_python_tool("learn_kmeans.py", shard, "train", 1, tmp_path / "km.bin", 4, "--backend", "sklearn")
    assert_clean_failure(result, "1 frames hold NaN or infinite values")
    # faiss reads a sample (here every frame) and names the frame's row in its shard
    result = run_python_tool("learn_kmeans.py", shard, "train", 1, tmp_path / "km.bin", 4, "--backend", "faiss")
    assert_clean_failure(result, str(shard / "train_0_1.npy"), "1 frames hold NaN or infinite values, the first is frame 10")
    assert not (tmp_path / "km.bin").exists()

    save_kmeans(learn_kmeans_faiss(np.nan_to_num(features), 4), str(tmp_path / "km.bin"))
    result = run_python_tool("dump_km_label.py", shard, "train", tmp_path / "km.bin", 1, 0, tmp_path / "labels")
    assert_clean_failure(result, str(shard / "train_0_1.npy"), "NaN or infinite")
    assert not (tmp_path / "labels" / "train_0_1.km").exists()


def test_zero_clusters_is_refused(tmp_path):
    shard = write_feature_shard(tmp_path / "features", np.zeros((8, 2), np.float32))
    assert_clean_failure(run_python_tool("learn_kmeans.py", shard, "train", 1, tmp_path / "km.bin", 0),
                         "number of clusters must be at least 1")


def test_merging_zero_shards_or_foreign_labels_keeps_the_existing_file(tmp_path):
    save_kmeans(learn_kmeans_faiss(np.random.default_rng(0).standard_normal((40, 2)).astype(np.float32), 4),
                str(tmp_path / "km.bin"))
    (tmp_path / "train.km").write_text("0 1 2\n")
    assert_clean_failure(run_python_tool("merge_km_labels.py", tmp_path, "train", 0, tmp_path / "km.bin"),
                         "nshard must be at least 1")
    (tmp_path / "train_0_1.km").write_text("0 1 3\n2 4 1\n")
    assert_clean_failure(run_python_tool("merge_km_labels.py", tmp_path, "train", 1, tmp_path / "km.bin"),
                         f"{tmp_path / 'train_0_1.km'}:2", "label '4' is not a cluster id of 0..3")
    (tmp_path / "train_0_1.km").write_text("0 x 3\n")
    assert_clean_failure(run_python_tool("merge_km_labels.py", tmp_path, "train", 1, tmp_path / "km.bin"),
                         "label 'x' is not a cluster id")
    assert (tmp_path / "train.km").read_text() == "0 1 2\n"


def test_malformed_shards_and_numbers_are_named(tmp_path):
    good = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    text_len = write_feature_shard(tmp_path / "text_len", good)
    (text_len / "train_0_1.len").write_text("12\nmany\n")
    truncated = write_feature_shard(tmp_path / "truncated", good)
    (truncated / "train_0_1.npy").write_bytes((truncated / "train_0_1.npy").read_bytes()[:100])
    flat = write_feature_shard(tmp_path / "flat", good[:, 0])
    cases = [
        ((text_len, "train", 1, tmp_path / "km.bin", 2), [f"{text_len / 'train_0_1.len'}, line 2", "'many'"]),
        ((truncated, "train", 1, tmp_path / "km.bin", 2), [str(truncated / "train_0_1.npy"), "not a readable .npy"]),
        ((flat, "train", 1, tmp_path / "km.bin", 2), [str(flat / "train_0_1.npy"), "must be (frames, dim)"]),
        ((flat, "train", 0, tmp_path / "km.bin", 2), ["nshard must be at least 1"]),
        ((text_len, "train", 1, tmp_path / "km.bin", 2, "--percent", 0), ["--percent 0.0 is not a fraction"]),
    ]
    for args, fragments in cases:
        assert_clean_failure(run_python_tool("learn_kmeans.py", *args), *fragments)
    assert not (tmp_path / "km.bin").exists()


def test_a_chunk_shorter_than_a_frame_is_refused_before_any_work(scratch_run, tmp_path):
    data = write_manifest(tmp_path / "data")
    for max_chunk in (100, 0):
        result = run_python_tool("dump_feature.py", data, "train", scratch_run[0], 1, 1, 0, tmp_path / "features",
                                 "--max-chunk", max_chunk)
        assert_clean_failure(result, f"--max-chunk {max_chunk} is shorter than one frame (400 samples)")
    assert not (tmp_path / "features").exists()


def test_text_that_is_not_utf8_is_named_with_its_line(tmp_path):
    data = write_manifest(tmp_path / "data")
    manifest = data / "train.tsv"
    manifest.write_bytes(manifest.read_bytes().replace(b"good_b.wav", "gut_\u00e9.wav".encode("latin-1")))
    result = run_python_tool("dump_mfcc_feature.py", data, "train", 1, 0, tmp_path / "features")
    assert_clean_failure(result, f"{manifest}, line 3: not UTF-8 text (byte 0xe9)")
    csv_path = tmp_path / "corpus.csv"
    csv_path.write_bytes("path,label,speaker\nj\u00f6rg.wav,neu,s1\n".encode("latin-1"))
    result = run_python_tool("prepare_corpus.py", csv_path, tmp_path / "out")
    assert_clean_failure(result, f"{csv_path}, line 2: not UTF-8 text")
    assert not (tmp_path / "out").exists()
