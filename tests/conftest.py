"""Shared fixtures: a generated tone corpus and real fairseq-hydra-train runs on it."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from iemocap_tree import IemocapTree, write_iemocap_tree  # noqa: E402
from tone_corpus import write_frame_labels, write_tone_corpus  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
# The suite runs on 2 workers (pytest-xdist, whole files per worker): these files take minutes
# each, so they start first and the short ones fill in around them instead of after them.
LONGEST_FIRST = ("test_recipe.py", "test_gpu_throughput_checks.py", "test_export.py", "test_gpu_check.py", "test_demo.py",
                 "test_slurm_launcher.py", "test_finetune.py", "test_fast_paths_switch.py", "test_slurm_failures.py")
PRETRAIN_CONFIG_DIR = REPO_ROOT / "config" / "pretrain"
SCRATCH_CLASSES = 11
CPT_CLASSES = 5


def pytest_collection_modifyitems(items) -> None:
    def rank(item) -> int:
        name = Path(str(item.fspath)).name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


def run_hydra_train(
    config_dir: Path, config_name: str, overrides: Sequence[str], cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess:
    """Run the real fairseq-hydra-train of this environment, as a user types it."""
    command = [
        str(Path(sys.executable).parent / "fairseq-hydra-train"),
        "--config-dir",
        str(config_dir),
        "--config-name",
        config_name,
        *overrides,
    ]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def run_python_tool(script: str, *args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` with this environment's Python, as a user types it."""
    command = [sys.executable, str(REPO_ROOT / "tools" / script), *map(str, args)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def train_log_records(output: str, tag: str = "train_inner") -> List[Dict[str, float]]:
    """The JSON records fairseq logs under ``[tag]`` (log_format json), values as floats."""
    records = []
    for line in output.splitlines():
        if f"[{tag}]" in line and "{" in line:
            record = json.loads(line[line.index("{") :])
            records.append({key: float(value) for key, value in record.items()})
    return records


def checkpoint_tensors(state, prefix: str = "") -> Dict[str, object]:
    """Every tensor of a checkpoint by its path in the nested state."""
    import torch  # here, not at the top: the tests of tools that never import torch stay without it

    if isinstance(state, dict):
        return {name: tensor for key, value in state.items()
                for name, tensor in checkpoint_tensors(value, f"{prefix}/{key}").items()}
    if isinstance(state, (list, tuple)):
        return {name: tensor for index, value in enumerate(state)
                for name, tensor in checkpoint_tensors(value, f"{prefix}/{index}").items()}
    return {prefix: state} if torch.is_tensor(state) else {}


def assert_succeeded(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def run_bench(script: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """bench/``script`` with ``args`` as a new process, which must succeed; its output captured."""
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script), *args],
                            capture_output=True, text=True, timeout=timeout)
    assert_succeeded(result)
    return result


# Operators each call of which reads tensor values on the host: _local_scalar_dense for
# item(), bool(), int(), float(), a tensor in an f-string or as an index (is_nonzero and item
# end in it, so it is counted there alone), nonzero for its output's size (boolean
# indexing, torch.where(mask)). On a GPU each waits for everything queued before it.
READING_OPERATORS = {"aten::_local_scalar_dense": 1, "aten::nonzero": 1}
# Reads that CUDA's kernel makes and the CPU's does not, so that a count on CPU tensors is the
# GPU's: bincount copies its input's min (the range check) and max (the number of bins) to the
# host (aten/src/ATen/native/cuda/SummaryOps.cu; read in the source, not timed on a GPU here).
READING_OPERATORS_ON_CUDA = {"aten::bincount": 2}
# Tensor methods that hand values to Python or to the host and run no operator on a CPU tensor,
# so that the profiler does not see them (on a GPU, .cpu() and .tolist() copy to the host).
READING_METHODS = ("tolist", "numpy", "cpu")
# Operators whose item() reads a value their caller gave on the host, which never waits:
# index_put_ with one boolean mask and one value (``x[mask] = 0``) takes the value only on the
# CPU, reads it and fills by the mask (canDispatchToMaskedFill in TensorAdvancedIndexing.cpp).
ITEMS_OF_HOST_VALUES = ("aten::_index_put_impl_",)


def host_reads(function) -> int:
    """How many times ``function`` reads tensor values on the host, counted on CPU tensors as a
    GPU would wait for them: each call of an operator of ``READING_OPERATORS`` (item(), bool(),
    int(), float(), nonzero) or ``READING_OPERATORS_ON_CUDA``, as the profiler records them,
    inside other operators too except the item() of ``ITEMS_OF_HOST_VALUES``, and each call of a
    method of ``READING_METHODS`` (``.tolist()``, ``.numpy()``, ``.cpu()``), of which
    ``.tolist()`` or ``.numpy()`` of what ``.cpu()`` returned is not counted again.

    Not counted: ``.to(device)``, because on CPU tensors a move to the GPU cannot be told from
    a read. Counted although a GPU would not wait: a read of a tensor that stays on the host
    there too (lengths the loader gives, say), because on the CPU every tensor is one."""
    import torch  # here, not at the top, as in checkpoint_tensors

    method_reads = []
    on_host = {}  # id -> tensor (kept alive, so that the id stays its own) of .cpu()'s results

    def counting(name, method):
        def read(tensor, *args, **kwargs):
            result = method(tensor, *args, **kwargs)
            if id(tensor) not in on_host:
                method_reads.append(name)
            if name == "cpu":
                on_host[id(result)] = result
            return result
        return read

    originals = {name: torch.Tensor.__dict__.get(name) for name in READING_METHODS}
    for name in READING_METHODS:
        setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            function()
    finally:
        for name, original in originals.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)
    reads_per_call = {**READING_OPERATORS, **READING_OPERATORS_ON_CUDA}
    return len(method_reads) + sum(reads_per_call[event.name] for event in profile.events()
                                   if event.name in reads_per_call and not (
                                       event.name == "aten::_local_scalar_dense"
                                       and caller(event) in ITEMS_OF_HOST_VALUES))


def caller(event) -> str:
    """The operator that ran the profiler's ``event`` (the one that called ``item()`` for
    ``_local_scalar_dense``); "" for Python."""
    parent = event.cpu_parent
    while parent is not None and parent.name in ("aten::item", "aten::_local_scalar_dense"):
        parent = parent.cpu_parent
    return "" if parent is None else parent.name


def table_rows(text: str, *first_cells: str) -> List[List[str]]:
    """The cells, stripped, of each markdown table row in ``text`` whose first cell starts
    with one of ``first_cells``."""
    prefixes = tuple(f"| {cell}" for cell in first_cells)
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(prefixes)]


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory):
    """Audio with 11 tone classes; 'km11' labels = the class, 'km5' labels = class mod 5."""
    root = tmp_path_factory.mktemp("tone_corpus")
    corpus = write_tone_corpus(
        str(root / "data"), SCRATCH_CLASSES, {"train": 24, "valid": 4}, seed=0
    )
    write_frame_labels(corpus, str(root / "labels11"), "km", SCRATCH_CLASSES)
    write_frame_labels(
        corpus, str(root / "labels5"), "km", CPT_CLASSES, lambda classes: classes % CPT_CLASSES
    )
    return root


@pytest.fixture(scope="session")
def scratch_run(tone_corpus):
    """A tiny HuBERT trained from scratch on 11 label classes (30 updates)."""
    save_dir = tone_corpus / "scratch"
    result = run_hydra_train(
        PRETRAIN_CONFIG_DIR,
        "hubert_tiny",
        [
            f"task.data={tone_corpus / 'data'}",
            f"task.label_dir={tone_corpus / 'labels11'}",
            "task.labels=[km]",
            f"checkpoint.save_dir={save_dir}",
        ],
    )
    assert_succeeded(result)
    return save_dir / "checkpoint_last.pt", result


@pytest.fixture(scope="session")
def iemocap_tree(tmp_path_factory) -> IemocapTree:
    """A generated IEMOCAP-shaped tree; tests that break it work on their own copy."""
    return write_iemocap_tree(str(tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release"))


@pytest.fixture(scope="session")
def iemocap_manifests(iemocap_tree, tmp_path_factory):
    """tools/prepare_iemocap.py --pretrain-splits on the generated tree: (out_dir, result)."""
    out_dir = tmp_path_factory.mktemp("iemocap_manifests")
    result = run_python_tool("prepare_iemocap.py", iemocap_tree.root, str(out_dir), "--pretrain-splits")
    assert_succeeded(result)
    return out_dir, result


FINETUNE_CONFIG_DIR = REPO_ROOT / "config" / "finetune"


@pytest.fixture(scope="session")
def emotion_corpus(tmp_path_factory):
    """Labelled utterances whose four classes differ in pitch and energy."""
    from emotion_tones import write_emotion_corpus

    data_dir = tmp_path_factory.mktemp("emotion_corpus")
    write_emotion_corpus(str(data_dir), {"train": 48, "valid": 16, "test": 16}, seed=1)
    return data_dir


def finetune(emotion_corpus, scratch_run, save_dir, pooling: str, *extra: str):
    """A real fairseq-hydra-train fine-tuning of the tiny scratch HuBERT."""
    result = run_hydra_train(
        FINETUNE_CONFIG_DIR,
        f"ser_{pooling}_tiny",
        [
            f"task.data={emotion_corpus}",
            f"model.w2v_path={scratch_run[0]}",
            f"checkpoint.save_dir={save_dir}",
            *extra,
        ],
    )
    assert_succeeded(result)
    return save_dir / "checkpoint_best.pt", result


@pytest.fixture(scope="session")
def attention_finetune(emotion_corpus, scratch_run, tmp_path_factory):
    return finetune(emotion_corpus, scratch_run, tmp_path_factory.mktemp("ser_attention"), "attention")


@pytest.fixture(scope="session")
def mean_finetune(emotion_corpus, scratch_run, tmp_path_factory):
    return finetune(emotion_corpus, scratch_run, tmp_path_factory.mktemp("ser_mean"), "mean")


@pytest.fixture(scope="session")
def released_stand_in(scratch_run, tone_corpus, tmp_path_factory):
    """The tiny scratch HuBERT and a k-means model of its layer 1: in place of the released pair."""
    from fairseq_flea.units.kmeans import learn_kmeans_faiss, load_features, save_kmeans
    from fairseq_flea.units.layer_features import dump_layer_features

    root = tmp_path_factory.mktemp("stand_in")
    dump_layer_features(str(tone_corpus / "data"), "train", str(scratch_run[0]), 1, 1, 0, str(root))
    save_kmeans(learn_kmeans_faiss(load_features(str(root), "train", 1), 8), str(root / "km.bin"))
    return scratch_run[0], root / "km.bin"
