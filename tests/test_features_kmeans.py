"""Feature dump and k-means labels in the HuBERT recipe's format, against fairseq's own code."""

import subprocess
import sys
from pathlib import Path

import fairseq
import numpy as np
import pytest
import soundfile as sf
import torch

import fairseq_flea  # noqa: F401
from conftest import run_python_tool
from fairseq import checkpoint_utils
from fairseq_flea.units.layer_features import dump_layer_features
from fairseq_flea.hubert.forward import pad_waveforms, padding_mask_from_lengths
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.units import kmeans
from fairseq_flea.units.kmeans import (
    candidate_rows,
    dump_km_labels,
    learn_kmeans_from_shards,
    learn_kmeans_sklearn,
    load_features,
    mean_squared_distance,
    read_rows_sample,
    save_kmeans,
    shards_mean_squared_distance,
)
from fairseq_flea.io.manifest import read_manifest

FAIRSEQ_KMEANS_SCRIPTS = Path(fairseq.__file__).parent / "examples" / "hubert" / "simple_kmeans"
LAYER = 1



def run_fairseq_script(name, *args):
    return subprocess.run(
        [sys.executable, str(FAIRSEQ_KMEANS_SCRIPTS / name), *map(str, args)],
        cwd=FAIRSEQ_KMEANS_SCRIPTS, capture_output=True, text=True, timeout=600,
    )


def ok(result):
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def read_shards(feat_dir, split, nshard):
    features, lengths = [], []
    for rank in range(nshard):
        features.append(np.load(feat_dir / f"{split}_{rank}_{nshard}.npy"))
        lengths += [int(n) for n in (feat_dir / f"{split}_{rank}_{nshard}.len").read_text().split()]
    stacked = np.concatenate(features)
    assert len(stacked) == sum(lengths)
    return np.split(stacked, np.cumsum(lengths)[:-1])


@pytest.fixture(scope="module")
def model(scratch_run):
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(scratch_run[0])])
    return models[0].eval()


@pytest.fixture(scope="module")
def waveforms(tone_corpus):
    manifest = read_manifest(str(tone_corpus / "data" / "train.tsv"))
    return [torch.from_numpy(sf.read(f"{manifest.root}/{name}", dtype="float32")[0]) for name in manifest.names]


@pytest.fixture(scope="module")
def dumped(tone_corpus, scratch_run, tmp_path_factory):
    """Layer features of the train split: batched in one shard, batched in two, and alone."""
    root = tmp_path_factory.mktemp("features")
    data, checkpoint = tone_corpus / "data", scratch_run[0]
    ok(run_python_tool("dump_feature.py", data, "train", checkpoint, LAYER, 1, 0, root / "one", "--batch-seconds", 100))
    # The library behind the tool, in-process: the same code without a start-up per shard.
    for rank in (0, 1):
        dump_layer_features(str(data), "train", str(checkpoint), LAYER, 2, rank, str(root / "two"), batch_seconds=100)
    dump_layer_features(str(data), "train", str(checkpoint), LAYER, 1, 0, str(root / "alone"), batch_seconds=0)
    return root


def test_dump_equals_direct_extract_features(dumped, model, waveforms):
    features = read_shards(dumped / "one", "train", 1)
    assert len(features) == len(waveforms)
    with torch.no_grad():
        for dumped_frames, waveform in zip(features, waveforms):
            direct, _ = model.extract_features(waveform[None], padding_mask=None, mask=False, output_layer=LAYER)
            assert dumped_frames.shape == direct[0].shape
            assert np.abs(dumped_frames - direct[0].numpy()).max() < 1e-4


def test_two_shards_concatenate_to_one(dumped):
    one, two = read_shards(dumped / "one", "train", 1), read_shards(dumped / "two", "train", 2)
    assert len(one) == len(two)
    for a, b in zip(one, two):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-5


def test_batched_equals_alone_with_groupnorm_model(dumped, model, waveforms):
    assert isinstance(model.feature_extractor.conv_layers[0][2], torch.nn.GroupNorm)
    batched, alone = read_shards(dumped / "one", "train", 1), read_shards(dumped / "alone", "train", 1)
    worst = max(np.abs(a - b).max() for a, b in zip(batched, alone))
    assert worst < 1e-4
    # The same batch through fairseq's own padded forward: padding leaks into the frames.
    source, lengths = pad_waveforms(waveforms)
    with torch.no_grad():
        stock, _ = model.extract_features(
            source, padding_mask=padding_mask_from_lengths(lengths, source.size(1)), mask=False, output_layer=LAYER
        )
    stock_worst = max(np.abs(a - s[: len(a)].numpy()).max() for a, s in zip(alone, stock))
    assert stock_worst > 1e-2


def test_max_chunk_extracts_pieces_separately(tone_corpus, scratch_run, model, waveforms, tmp_path):
    ok(run_python_tool("dump_feature.py", tone_corpus / "data", "train", scratch_run[0], LAYER, 1, 0, tmp_path, "--max-chunk", 16000))
    features = read_shards(tmp_path, "train", 1)
    with torch.no_grad():
        expected = torch.cat([
            model.extract_features(piece[None], padding_mask=None, mask=False, output_layer=LAYER)[0][0]
            for piece in waveforms[0].split(16000)
            if len(piece) >= 400  # shorter than one frame's span: no frame
        ])
    assert features[0].shape == expected.shape
    assert np.abs(features[0] - expected.numpy()).max() < 1e-4


def torchaudio_kaldi_reference():
    """torchaudio's kaldi.py, loaded from its source: torchaudio's C library does not load
    beside this torch, and the file only needs torch plus one DCT helper, given from scipy."""
    import importlib.util
    import types

    import scipy.fft

    source = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "torchaudio" / "compliance" / "kaldi.py"
    if not source.exists():
        pytest.skip("torchaudio's source is not installed")
    stand_in = types.ModuleType("torchaudio")
    stand_in.functional = types.SimpleNamespace(
        create_dct=lambda n_mfcc, n_mels, norm: torch.tensor(
            scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0).T[:, :n_mfcc], dtype=torch.float32
        )
    )
    saved = sys.modules.get("torchaudio")
    sys.modules["torchaudio"] = stand_in
    try:
        spec = importlib.util.spec_from_file_location("torchaudio_kaldi_reference", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["torchaudio"]
        else:
            sys.modules["torchaudio"] = saved
    return module


def reference_deltas(features: torch.Tensor) -> torch.Tensor:
    """torchaudio.functional.compute_deltas(win_length=5) on (time, dim)."""
    padded = torch.nn.functional.pad(features.T[None], (2, 2), mode="replicate")[0].T
    t = len(features)
    return (padded[3 : 3 + t] - padded[1 : 1 + t] + 2 * (padded[4 : 4 + t] - padded[0:t])) / 10


def test_mfcc_dump_matches_torchaudio_kaldi(tone_corpus, waveforms, tmp_path):
    ok(run_python_tool("dump_mfcc_feature.py", tone_corpus / "data", "train", 1, 0, tmp_path))
    features = read_shards(tmp_path, "train", 1)
    kaldi = torchaudio_kaldi_reference()
    for dumped_frames, waveform in zip(features[:5], waveforms[:5]):
        static = kaldi.mfcc(waveform[None], sample_frequency=16000, use_energy=False)
        first = reference_deltas(static)
        expected = torch.cat([static, first, reference_deltas(first)], dim=1).numpy()
        assert dumped_frames.shape == (1 + (len(waveform) - 400) // 160, 39) == expected.shape
        assert np.abs(dumped_frames - expected).max() < 1e-3 * np.abs(expected).max()


@pytest.fixture(scope="module")
def km_dir(dumped, tmp_path_factory):
    """Our k-means models (both backends; faiss as the tool's default) and fairseq's, on the
    two-shard features."""
    root = tmp_path_factory.mktemp("kmeans")
    features = load_features(str(dumped / "two"), "train", 2)
    save_kmeans(learn_kmeans_sklearn(features, 8, n_init=3), str(root / "ours.bin"))
    ok(run_python_tool("learn_kmeans.py", dumped / "two", "train", 2, root / "faiss.bin", 8))
    ok(run_fairseq_script("learn_kmeans.py", dumped / "two", "train", 2, root / "fairseq.bin", 8, "--n_init", 3))
    return root


def test_the_tool_and_the_recipe_learn_k_means_with_faiss_unless_told(km_dir):
    import joblib
    from sklearn.cluster import KMeans

    from fairseq_flea.recipe.flea_recipe import RecipeConfig

    assert kmeans.DEFAULT_KMEANS_BACKEND == RecipeConfig.kmeans_backend == "faiss"
    model = joblib.load(km_dir / "faiss.bin")  # learnt without --backend
    assert type(model) is KMeans and model.n_init == kmeans.FAISS_RESTARTS  # sklearn's is a MiniBatchKMeans
    result = run_python_tool("learn_kmeans.py", "--help")
    assert "(default: faiss)" in result.stdout and "--backend faiss (the default" in result.stdout


@pytest.mark.parametrize("model_name", ["ours.bin", "faiss.bin", "fairseq.bin"])
def test_our_and_fairseq_label_dumps_agree(dumped, km_dir, model_name, tmp_path):
    for rank in (0, 1):
        dump_km_labels(str(dumped / "two"), "train", str(km_dir / model_name), 2, rank, str(tmp_path / "ours"))
        ok(run_fairseq_script("dump_km_label.py", dumped / "two", "train", km_dir / model_name, 2, rank, tmp_path / "fairseq"))
        ours = (tmp_path / "ours" / f"train_{rank}_2.km").read_text()
        theirs = (tmp_path / "fairseq" / f"train_{rank}_2.km").read_text()
        assert ours == theirs
    labels = [int(x) for x in ours.split()]
    assert len(set(labels)) > 1 and max(labels) < 8


def test_merged_labels_fit_the_manifest(tone_corpus, dumped, km_dir, tmp_path):
    for rank in (0, 1):
        ok(run_python_tool("dump_km_label.py", dumped / "two", "train", km_dir / "faiss.bin", 2, rank, tmp_path))
    ok(run_python_tool("merge_km_labels.py", tmp_path, "train", 2, km_dir / "faiss.bin"))
    lines = (tmp_path / "train.km").read_text().splitlines()
    frames = [len(f) for f in read_shards(dumped / "one", "train", 1)]
    assert [len(line.split()) for line in lines] == frames
    assert (tmp_path / "dict.km.txt").read_text().splitlines() == [f"{k} 1" for k in range(8)]


def write_numbered_shards(directory: Path, utterance_lengths) -> np.ndarray:
    """Shards (one list of utterance lengths each) whose frame i, counted over all shards,
    holds i in its first column, so that a sampled frame says which it is; all frames."""
    directory.mkdir(exist_ok=True)
    rng, start, shards = np.random.default_rng(0), 0, []
    for rank, lengths in enumerate(utterance_lengths):
        frames = rng.standard_normal((sum(lengths), 3)).astype(np.float32)
        frames[:, 0] = np.arange(start, start + len(frames))
        start += len(frames)
        np.save(directory / f"train_{rank}_{len(utterance_lengths)}.npy", frames)
        (directory / f"train_{rank}_{len(utterance_lengths)}.len").write_text("".join(f"{n}\n" for n in lengths))
        shards.append(frames)
    return np.concatenate(shards)


def load_feature_sample(feat_dir: str, split: str, nshard: int, max_frames: int, percent: float = -1.0,
                        seed: int = 0) -> np.ndarray:
    """At most ``max_frames`` of the frames ``load_features`` would load, drawn as the faiss
    backend of ``learn_kmeans_from_shards`` draws its sample."""
    rows, rng = candidate_rows(feat_dir, split, nshard, percent, seed)
    return read_rows_sample(feat_dir, split, nshard, rows, max_frames, rng)


class RowCountingArray:
    """A shard's memory-mapped array that counts the rows read from it."""

    rows_read = 0

    def __init__(self, array):
        self.array, self.shape, self.ndim = array, array.shape, array.ndim

    def __getitem__(self, index):
        rows = self.array[index]
        RowCountingArray.rows_read += len(rows)
        return rows


def test_feature_sample_reads_only_its_rows_of_the_shards(tmp_path, monkeypatch):
    every_frame = write_numbered_shards(tmp_path, [[30, 50, 20], [40, 60]])
    open_feature_array = kmeans.open_feature_array
    monkeypatch.setattr(kmeans, "open_feature_array", lambda path: RowCountingArray(open_feature_array(path)))
    sample = load_feature_sample(str(tmp_path), "train", 2, 37, seed=3)
    assert len(sample) == 37 == RowCountingArray.rows_read
    rows = sample[:, 0].astype(int)
    assert np.all(np.diff(rows) > 0) and rows[-1] >= 100  # distinct, in file order, from both shards
    assert np.array_equal(sample, every_frame[rows])
    assert np.array_equal(load_feature_sample(str(tmp_path), "train", 2, 10**6), every_frame)


def test_feature_sample_draws_from_the_utterances_of_percent(tmp_path):
    write_numbered_shards(tmp_path, [[30, 50, 20, 10], [40, 60, 5]])
    chosen = load_features(str(tmp_path), "train", 2, percent=0.5, seed=1)[:, 0]
    every_chosen = load_feature_sample(str(tmp_path), "train", 2, 10**6, percent=0.5, seed=1)[:, 0]
    assert sorted(chosen) == every_chosen.tolist()
    assert set(load_feature_sample(str(tmp_path), "train", 2, 20, percent=0.5, seed=1)[:, 0]) < set(chosen)


def test_feature_sample_refuses_non_finite_frames_naming_shard_and_row(tmp_path):
    every_frame = write_numbered_shards(tmp_path, [[30, 50], [40]])
    every_frame[80 + 7, 2] = np.inf
    np.save(tmp_path / "train_1_2.npy", every_frame[80:])
    with pytest.raises(FleaInputError, match=r"train_1_2\.npy: 1 frames hold NaN or infinite values, the first is frame 7$"):
        load_feature_sample(str(tmp_path), "train", 2, 10**6)


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_learn_kmeans_from_shards(tmp_path, backend):
    every_frame = write_numbered_shards(tmp_path, [[3, 4], [5]])
    with pytest.raises(FleaInputError, match=f"^{tmp_path}: 13 clusters requested but only 12 frames$"):
        learn_kmeans_from_shards(str(tmp_path), "train", 2, 13, backend)
    chosen = len(load_features(str(tmp_path), "train", 2, percent=0.5))  # one utterance of each shard
    with pytest.raises(FleaInputError, match=f"{chosen + 1} clusters requested but only {chosen} frames"):
        learn_kmeans_from_shards(str(tmp_path), "train", 2, chosen + 1, backend, percent=0.5)
    options = {"n_init": 1} if backend == "sklearn" else {}
    model = learn_kmeans_from_shards(str(tmp_path), "train", 2, 4, backend, **options)
    assert model.cluster_centers_.shape == (4, 3)
    inertia = shards_mean_squared_distance(str(tmp_path), "train", 2, model.cluster_centers_)
    assert inertia == pytest.approx(mean_squared_distance(every_frame, model.cluster_centers_))
