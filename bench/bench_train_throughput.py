#!/usr/bin/env python3
"""Training throughput: N updates of TAPT (masked prediction, 500 labels) and of
ser_attention fine-tuning through fairseq-hydra-train with the shipped configs, on generated
audio with IEMOCAP-like lengths, from a HuBERT-base-size (or tiny) stand-in checkpoint.

For each run it prints updates/s and seconds of audio per second (steady state: after the
first epoch, where every batch shape was seen before; waits for data included), model FLOP
utilisation (FLOPs of one step counted with torch.utils.flop_counter, against the GPU's dense
bf16/fp16 peak), peak GPU memory, the attention kernel that ran, how busy the GPU was inside
a step, and the time outside the steady steps: start-up, the first epoch's extra time for
batch shapes new to the GPU ("new shapes"), validation, checkpoint writes (the time training
waits for them: with task.background_checkpoint_writes, the copy to CPU memory; the last
save's write, still going on when training ends, counts in exit), waiting between steps,
exit. The last column projects that share to a full-length run on one IEMOCAP fold (20,000
updates of pretraining; 40 epochs of fine-tuning) from the measured parts and the config's
intervals, started as the recipe starts a training: in a process forked with torch, fairseq
and torch._dynamo imported, so the start-up after those imports.

--checkouts runs other copies of the project the same way (e.g. the commit before a change,
from `git worktree add`), so before and after are measured in one run on one machine.
--candidates also runs the first checkout with other values of the configs' fast_paths
(task.fast_paths for pretraining, model.fast_paths for fine-tuning; e.g. all,-fast-fft-sizes
or all+compiled-layers) or with a fairseq-hydra-train override (anything with "=", such as
dataset.batch_size_valid=192), one more row each. Compare rows by
audio s/s: FLOPs are what torch.utils.flop_counter counts in each run's own step, and it
counts nothing for FFTs, so with the positional convolution by FFT (the default) GFLOP and
MFU read low.

    python bench/bench_train_throughput.py --device cuda --precision bf16 [fp16 fp32]
    python bench/bench_train_throughput.py --device cuda --checkouts . ../before --names after before
    python bench/bench_train_throughput.py --device cuda --candidates all,-fft-positional-conv all+cudnn-benchmark
    python bench/bench_train_throughput.py --device cuda --candidates task.persistent_workers=true
    python bench/bench_train_throughput.py --device cpu   # tiny smoke test
"""

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fairseq.dataclass.utils import merge_with_parent  # noqa: E402
from fairseq.models.hubert import HubertConfig  # noqa: E402

from fairseq_flea.hubert.conversion import save_fairseq_checkpoint  # noqa: E402
from fairseq_flea.hubert.fast_path_names import parse_fast_paths  # noqa: E402
from fairseq_flea.hubert.encoder import build_hubert_encoder  # noqa: E402
from fairseq_flea.io.manifest import read_manifest  # noqa: E402
from fairseq_flea.recipe.flea_recipe import PRECISION_OVERRIDES  # noqa: E402

SAMPLE_RATE = 16000
LABEL_RATE = 50
UNITS = 500  # the released k-means model's labels, which TAPT predicts
CLASSES = ["ang", "hap", "neu", "sad"]
# IEMOCAP's lengths (median 3.6 s), drawn log-normally and kept within 0.6-20 s (the tiny size: 10 s,
# tapt_tiny's batch).
MEDIAN_SECONDS, LOG_SPREAD, SHORTEST, LONGEST = 3.6, 0.6, 0.6, 20.0
# One IEMOCAP fold (5531 utterances, 5 sessions): 4 sessions train, 5 % of them validate
# pretraining; one speaker of the held-out session validates fine-tuning. The projection
# draws a fold's lengths as the bench draws its corpus and batches them as fairseq would with
# the run's config: an epoch's updates and new batch shapes scale by the training batches
# (training_batches), a validation's steps and later batches by the samples it computes on
# (validation_samples; the bench's few validation utterances make batches padded far more than
# a fold's), while what it spends once (its first batch, set-up, logging) stays.
FOLD_TRAIN_UTTERANCES = 4425
FOLD_PRETRAIN_VALID_UTTERANCES = 221
FOLD_FINETUNE_VALID_UTTERANCES = 553
FULL_PRETRAINING_UPDATES = 20000
FULL_FINETUNING_EPOCHS = 40
# Dense bf16/fp16 tensor-core peak from NVIDIA's data sheets, TFLOP/s, by device name.
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
               ("A100", 312.0), ("L40S", 362.0), ("A10", 125.0), ("L4", 121.0)]
# Steps 1-3 warm up; step 4's FLOPs are counted; one of the last steps is profiled. Batches
# come from the length-sorted utterance list, so every epoch has the same batch shapes, and
# a step whose shape is new is slower (kernel selection, the allocator's growth: 0.17-0.5 s
# against 56 ms for base TAPT on an H200). A full run sees each shape once in ~90 epochs of
# TAPT, 40 of fine-tuning, so the rates are taken after the first epoch, as in most of a long
# run, and the first epoch's extra time is a fixed cost ("new shapes"). A run of one epoch
# (or too few steps after it) takes its rates from step 5 on.
WARM_UP, COUNT_AT, PROFILE_BEFORE_END = 3, 4, 5
STEADY_AT_LEAST = 10  # steps after the first epoch for rates taken there


def profile_step(updates: int) -> int:
    return max(COUNT_AT + 1, updates - PROFILE_BEFORE_END)


PHASES = {
    "pretraining": ("pretrain", "tapt"),
    "finetuning": ("finetune", "ser_attention"),
}


def utterance_lengths(count: int, seed: int, longest: float = LONGEST) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seconds = np.clip(np.exp(rng.normal(np.log(MEDIAN_SECONDS), LOG_SPREAD, count)), SHORTEST, longest)
    return (seconds * SAMPLE_RATE).astype(int)


def length_sorted_batches(sizes: np.ndarray, max_tokens: Optional[int], max_sentences: Optional[int]) -> List[np.ndarray]:
    """The batches fairseq's batch_by_size makes of ``sizes`` (as its dataset counts them),
    longest first, as both datasets order them; each an array of indices into ``sizes``."""
    from fairseq.data import data_utils

    order = np.argsort(sizes, kind="stable")[::-1]
    return data_utils.batch_by_size(order, lambda index: sizes[index], max_tokens=max_tokens,
                                    max_sentences=max_sentences, required_batch_size_multiple=1)


def batched_samples(sizes: np.ndarray, max_tokens: Optional[int], max_sentences: Optional[int],
                    cropped: bool) -> int:
    """The samples a model computes on when fairseq batches ``sizes``: each batch cropped to
    its shortest member (HuBERT pretraining) or padded to its longest (fine-tuning)."""
    per_batch = np.min if cropped else np.max
    return sum(int(per_batch(sizes[batch])) * len(batch)
               for batch in length_sorted_batches(sizes, max_tokens, max_sentences))


def counted_training_sizes(sizes: np.ndarray, phase: str, task, max_tokens: Optional[int]) -> np.ndarray:
    """Each training utterance as the phase's dataset counts it (both tasks: at most
    task.max_sample_size samples), without those fairseq leaves out: under
    task.min_sample_size (HuBERT pretraining) and above max_tokens."""
    counted = np.minimum(sizes, task["max_sample_size"]) if task.get("max_sample_size") else sizes
    kept = np.ones(len(sizes), dtype=bool)
    if phase == "pretraining" and task.get("min_sample_size"):
        kept &= sizes >= task["min_sample_size"]
    if max_tokens:
        kept &= counted <= max_tokens
    return counted[kept]


def training_batches(sizes: np.ndarray, phase: str, config: dict) -> int:
    """How many batches an epoch of training on ``sizes`` has with a run's (resolved) config."""
    dataset = config["dataset"]
    counted = counted_training_sizes(sizes, phase, config["task"], dataset["max_tokens"])
    return len(length_sorted_batches(counted, dataset["max_tokens"], dataset["batch_size"]))


def audio_kept_by_cropping(sizes: np.ndarray, max_tokens: int, task) -> float:
    """The share of a corpus's audio that HuBERT pretraining sees in an epoch: fairseq
    batches the length-sorted utterances with its batch_by_size and crops each batch to its
    shortest member."""
    counted = counted_training_sizes(sizes, "pretraining", task, max_tokens)
    return batched_samples(counted, max_tokens, None, cropped=True) / float(sizes.sum())


def validated_sizes(sizes: np.ndarray, phase: str, config: dict) -> np.ndarray:
    """The lengths a validation of ``sizes`` batches: pretraining's at most task.max_sample_size;
    those above max_tokens_valid left out, as skip_invalid_size_inputs_valid_test leaves them."""
    if phase == "pretraining":
        sizes = np.minimum(sizes, config["task"]["max_sample_size"])
    max_tokens = config["dataset"]["max_tokens_valid"]
    return sizes[sizes <= max_tokens] if max_tokens else sizes


def validation_samples(sizes: np.ndarray, phase: str, config: dict) -> int:
    """The samples a validation of ``sizes`` computes on with a run's (resolved) config:
    pretraining crops each batch to its shortest utterance (at most task.max_sample_size),
    fine-tuning pads each to its longest, full length."""
    dataset = config["dataset"]
    return batched_samples(validated_sizes(sizes, phase, config), dataset["max_tokens_valid"],
                           dataset["batch_size_valid"], cropped=phase == "pretraining")


def validation_batches(sizes: np.ndarray, phase: str, config: dict) -> int:
    """How many batches a validation of ``sizes`` has with a run's (resolved) config."""
    dataset = config["dataset"]
    return len(length_sorted_batches(validated_sizes(sizes, phase, config), dataset["max_tokens_valid"],
                                     dataset["batch_size_valid"]))


def validation_utterances(train_utterances: int) -> int:
    return max(2, train_utterances // 8)


def write_corpus(data_dir: Path, train_utterances: int, longest: float = LONGEST) -> Dict[str, float]:
    """Manifests, 500-unit frame labels and emotion labels of generated audio, none longer
    than ``longest`` seconds; seconds per split."""
    rng = np.random.default_rng(0)
    wav_dir = data_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for split, count, seed in (("train", train_utterances, 1), ("valid", validation_utterances(train_utterances), 2)):
        lengths = utterance_lengths(count, seed, longest)
        manifest, units, emotions = [str(wav_dir)], [], []
        for index, length in enumerate(lengths):
            name = f"{split}_{index:05d}.wav"
            tone = np.sin(2 * np.pi * rng.uniform(100, 300) * np.arange(length) / SAMPLE_RATE)
            sf.write(wav_dir / name, (0.3 * tone + 0.05 * rng.standard_normal(length)).astype(np.float32),
                     SAMPLE_RATE, subtype="PCM_16")
            manifest.append(f"{name}\t{length}")
            units.append(" ".join(map(str, rng.integers(0, UNITS, length * LABEL_RATE // SAMPLE_RATE))))
            emotions.append(CLASSES[index % len(CLASSES)])
        (data_dir / f"{split}.tsv").write_text("\n".join(manifest) + "\n")
        (data_dir / f"{split}.km").write_text("\n".join(units) + "\n")
        (data_dir / f"{split}.emo").write_text("\n".join(emotions) + "\n")
        seconds[split] = float(lengths.sum()) / SAMPLE_RATE
    (data_dir / "dict.km.txt").write_text("".join(f"{unit} 1\n" for unit in range(UNITS)))
    (data_dir / "dict.emo.txt").write_text("".join(f"{label} 1\n" for label in CLASSES))
    return seconds


def write_stand_in(path: Path, size: str) -> None:
    """A random-weight HuBERT checkpoint of the released model's format, base or tiny size."""
    if size == "base":
        architecture = {"_name": "hubert", "label_rate": LABEL_RATE}  # HubertConfig's defaults are base
    else:
        architecture = dict(OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "config/pretrain/hubert_tiny.yaml").model))
    model_cfg = OmegaConf.create(OmegaConf.to_container(
        merge_with_parent(HubertConfig(), OmegaConf.create(architecture)), enum_to_str=True))
    task_cfg = {"_name": "hubert_pretraining", "sample_rate": SAMPLE_RATE, "normalize": False,
                "labels": ["km"], "label_rate": LABEL_RATE}
    encoder = build_hubert_encoder(OmegaConf.create({"model": model_cfg, "task": task_cfg}), {})
    save_fairseq_checkpoint(str(path), {"model": model_cfg, "task": task_cfg}, encoder.state_dict())


@dataclass
class Run:
    checkout: str  # its name in the table, with any candidate changes
    precision: str
    phase: str
    candidates: str = ""
    record: dict = field(default_factory=dict)
    spawned: float = 0.0
    ended: float = 0.0
    config: dict = field(default_factory=dict)
    log: str = ""


def phase_overrides(phase: str, data: Path, stand_in: Path, save_dir: Path, precision: str, device: str,
                    updates: int) -> List[str]:
    """fairseq-hydra-train overrides of a short run of the phase on the generated corpus."""
    overrides = [
        f"common.cpu={'true' if device == 'cpu' else 'false'}", *PRECISION_OVERRIDES[precision],
        f"checkpoint.save_dir={save_dir}", f"optimization.max_update={updates}", f"task.data={data}",
    ]
    if phase == "pretraining":
        return overrides + [f"task.label_dir={data}", "task.labels=[km]", f"task.init_from={stand_in}"]
    return overrides + [f"model.w2v_path={stand_in}"]


def train_command(checkout: Path, phase: str, size: str, data: Path, stand_in: Path, save_dir: Path,
                  precision: str, device: str, updates: int, extra: Sequence[str] = ()) -> List[str]:
    config_group, config_stem = PHASES[phase]
    return [sys.executable, str(REPO_ROOT / "bench" / "timed_hydra_train.py"),
            "--config-dir", str(checkout / "config" / config_group), "--config-name", f"{config_stem}_{size}",
            f"common.user_dir={checkout / 'fairseq_flea'}",
            *phase_overrides(phase, data, stand_in, save_dir, precision, device, updates), *extra]


def candidate_overrides(candidate: str, phase: str) -> List[str]:
    """A --candidates value as fairseq-hydra-train overrides: an override (key=value) as it is,
    else a fast_paths value on the phase's field, quoted for hydra (its commas)."""
    if not candidate or "=" in candidate:
        return [candidate] if candidate else []
    return [f'{"task" if phase == "pretraining" else "model"}.fast_paths="{candidate}"']


def run_directory(name: str) -> str:
    """A run's directory name: hydra's override grammar takes no "=", "," or quotes in a
    path such as checkpoint.save_dir."""
    return re.sub(r"[^\w.+-]+", "-", name)


def run_training(run: Run, checkout: Path, args, work: Path, data: Path, stand_in: Path) -> Run:
    run_dir = work / run_directory(run.checkout) / run.precision / run.phase
    # fairseq would resume from an earlier run's checkpoints in a reused --work-dir and train nothing.
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    times_path = run_dir / "times.json"
    command = train_command(checkout, run.phase, args.size, data, stand_in, run_dir / "checkpoints", run.precision,
                            args.device, args.updates, [*args.overrides, *candidate_overrides(run.candidates, run.phase)])
    env = {**os.environ, "FLEA_TRAINING_TIMES": str(times_path),
           "FLEA_PROFILE_TABLE": str(run_dir / "profile.txt"),
           "FLEA_COUNT_FLOPS_AT": str(COUNT_AT), "FLEA_PROFILE_AT": str(profile_step(args.updates)),
           "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")])}
    run.log = str(run_dir / "train.log")
    with open(run.log, "w") as log:
        run.spawned = time.time()
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run_dir)
        run.ended = time.time()
    if finished.returncode != 0 or not times_path.is_file():
        tail = Path(run.log).read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{run.checkout} {run.precision} {run.phase} failed (see {run.log}): {' | '.join(tail)}")
    run.record = json.loads(times_path.read_text())
    run.config = OmegaConf.to_container(OmegaConf.load(run_dir / "checkpoints" / "hydra" / ".hydra" / "config.yaml"),
                                        resolve=True)
    return run


def peak_tflops(device_name: Optional[str], override: Optional[float]) -> Optional[float]:
    if override:
        return override
    for name, tflops in PEAK_TFLOPS:
        if device_name and name in device_name:
            return tflops
    return None


def overlap(spans: Sequence[Sequence[float]], start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in spans)


def count_events(full_updates: float, full_epochs: float, every_epochs: int, every_updates: int) -> float:
    """How often a full run validates or saves: per epoch interval, per update interval, and at the end."""
    by_epoch = full_epochs / every_epochs if every_epochs and every_epochs > 0 else 0.0
    by_update = full_updates / every_updates if every_updates and every_updates > 0 else 0.0
    return math.floor(by_epoch) + math.floor(by_update) + 1


@dataclass
class ValidationParts:
    """Validations' seconds, summed over them, by what they went to."""
    validations: int
    steps: float  # fairseq's valid_step: each batch's forward, loss and metrics
    first_batch_waits: float  # next() before each validation's first step: its first batch
    later_batch_waits: float  # next() after it, for batches the loader reads during the steps
    rest: float  # setting up the iterator, switching the model, reducing and logging metrics

    @property
    def once_per_validation(self) -> float:
        return self.first_batch_waits + self.rest

    @property
    def per_batch(self) -> float:
        return self.steps + self.later_batch_waits


def warm_validations(record: dict) -> Tuple[List[List[float]], float]:
    """The validations a validation's cost is taken from, and the first validation's extra
    seconds for batch shapes new to the GPU. Where the bench's second pass over the first
    validation's batches was recorded (``warm_validation``): the later validations and that
    pass, and the first validation's time above the pass; in older records: every validation
    as measured, and none."""
    warm = record.get("warm_validation", [])
    if not warm:
        return record["validations"], 0.0
    (first_start, first_end), (warm_start, warm_end) = record["validations"][0], warm[0]
    return [*record["validations"][1:], *warm], max(0.0, (first_end - first_start) - (warm_end - warm_start))


def validation_parts(record: dict, validations: Sequence[Sequence[float]]) -> Optional[ValidationParts]:
    """Where the time of these validations of the record went; None for records from before
    their steps were recorded."""
    if "valid_steps" not in record:
        return None
    steps = first = later = rest = 0.0
    for start, end in validations:
        in_steps = overlap(record["valid_steps"], start, end)
        first_step = min((a for a, _ in record["valid_steps"] if start <= a <= end), default=end)
        waits = [(a, b) for a, b in record["valid_batch_waits"] if start <= a and b <= end]
        before_first_step = sum(b - a for a, b in waits if b <= first_step)
        after = sum(b - a for a, b in waits if b > first_step)
        steps, first, later = steps + in_steps, first + before_first_step, later + after
        rest += end - start - in_steps - before_first_step - after
    return ValidationParts(validations=len(validations), steps=steps, first_batch_waits=first,
                           later_batch_waits=later, rest=rest)


@dataclass
class Summary:
    updates_per_second: float
    audio_per_second: float
    flops_per_audio_second: Optional[float]
    mfu: Optional[float]
    kernel_seconds: Optional[float]  # of the profiled step, on the GPU
    busy_in_step: Optional[float]
    attention: str
    startup: float  # of a new fairseq-hydra-train process
    startup_after_imports: Optional[float]  # what a training the recipe forks pays
    in_steps: float
    new_shapes: float
    validation: float
    validations: int
    saving: float
    saves: int
    waiting: float
    exit: float
    outside_share: float
    projected_outside_share: float
    parts: Dict[str, float]
    top_ops: List
    gaps_within_epochs: List[float]
    gaps_at_epoch_ends: List[float]
    batch_waits_within_epochs: List[float]
    validation_parts: Optional[ValidationParts]  # of the validations whose batch shapes were seen
    validation_new_shapes: float  # the first validation's extra
    host_waits: Optional[List[float]] = None  # [count, seconds] for a CUDA stream, in the profiled step


def validations_and_saves(record: dict) -> List[List[float]]:
    """The spans in which a run validated (the bench's second pass included) or saved."""
    return [*record["validations"], *record.get("warm_validation", []), *record["saves"]]


def spans_between_steps(record: dict) -> Iterator[Tuple[float, float, float, bool]]:
    """Each span from a step's end to the next one's start: (start, end, its seconds with
    validation and saving left out, whether an epoch ended in it, where fairseq starts a new
    epoch's iterator and loader workers)."""
    interruptions = validations_and_saves(record)
    epoch_ends = [epoch["end"] for epoch in record["epochs"]]
    for before, after in zip(record["steps"], record["steps"][1:]):
        start, end = before["end"], after["start"]
        gap = end - start - overlap(interruptions, start, end)
        yield start, end, gap, any(start <= moment <= end for moment in epoch_ends)


def gaps_between_steps(record: dict) -> Tuple[List[float], List[float]]:
    """Seconds from each step's end to the next one's start, validation and saving left out:
    those within an epoch, and those across an epoch's end."""
    within, across = [], []
    for _, _, gap, epoch_ended in spans_between_steps(record):
        (across if epoch_ended else within).append(gap)
    return within, across


def batch_waits_within_epochs(record: dict) -> List[float]:
    """Of each gap between steps within an epoch, the seconds the training loop spent in
    next() on fairseq's batch iterator (waiting for data); empty where not recorded."""
    waits = record.get("batch_waits", [])
    return [overlap(waits, start, end) for start, end, _, epoch_ended in spans_between_steps(record)
            if waits and not epoch_ended]


def instrumented(step: dict) -> bool:
    """FLOPs counted or profiled: slower, left out of the rates."""
    return "flops" in step or "profile" in step


def steady_steps(record: dict) -> Tuple[List[dict], List[dict]]:
    """The steps the rates are taken from (after the first epoch, where every batch shape was
    seen before; else from step WARM_UP + 1 on), and the first epoch's steps (none when the
    rates include them); steps with FLOPs counted or profiled are left out of the rates."""
    steps, epochs = record["steps"], record["epochs"]
    if len(epochs) > 1:
        first_epoch_end = epochs[0]["end"]
        later = [s for s in steps if s["start"] > first_epoch_end and not instrumented(s)]
        if len(later) >= STEADY_AT_LEAST:
            return later, [s for s in steps if s["start"] <= first_epoch_end]
    return [s for number, s in enumerate(steps, 1) if number > WARM_UP and not instrumented(s)], []


def summarise(run: Run, lengths: Dict[str, np.ndarray], peak: Optional[float]) -> Summary:
    """The run's rates and times, and the share outside the steps projected to one IEMOCAP
    fold; ``lengths``: the samples of each utterance of the run's "train" and "valid" splits."""
    record = run.record
    steps = record["steps"]
    special = [s for s in steps if instrumented(s)]
    steady, first_epoch = steady_steps(record)
    window_start, window_end = steady[0]["start"], steady[-1]["end"]
    interruptions = [*validations_and_saves(record), *[[s["start"], s["end"]] for s in special]]
    window = window_end - window_start - overlap(interruptions, window_start, window_end)
    updates_per_second = len(steady) / window
    audio_per_second = sum(s["audio_seconds"] for s in steady) / window
    counted = next((s for s in steps if "flops" in s), None)
    flops_per_audio_second = counted["flops"] / counted["audio_seconds"] if counted else None
    mfu = (flops_per_audio_second * audio_per_second / (peak * 1e12)
           if peak and flops_per_audio_second and run.precision != "fp32" else None)
    profiled = next((s for s in steps if "profile" in s), {}).get("profile", {})
    mean_step = sum(s["end"] - s["start"] for s in steady) / len(steady)
    new_shapes = max(0.0, sum(s["end"] - s["start"] - mean_step for s in first_epoch if not instrumented(s)))
    busy = profiled.get("busy_seconds")

    in_steps = sum(s["end"] - s["start"] for s in steps)
    validation = sum(b - a for a, b in record["validations"])
    saving = sum(b - a for a, b in record["saves"])
    first = steps[0]["start"]
    gaps = gaps_between_steps(record)
    waiting = sum(gaps[0]) + sum(gaps[1])
    startup = first - run.spawned
    # The recipe forks its trainings from a process with torch, fairseq and torch._dynamo
    # imported; older records have only the new process's start-up.
    startup_after_imports = first - record["imports_done"] if "imports_done" in record else None
    exit_seconds = run.ended - record["training_done"]
    # The bench's second pass over the first validation is no part of a run.
    wall = run.ended - run.spawned - sum(b - a for a, b in record.get("warm_validation", []))
    # Validation and saving after the last step (the final ones) are outside [first, last].
    outside = wall - in_steps

    # A full run on one IEMOCAP fold, from the measured parts.
    # A fold's epoch has `scale` times the batches of the run's, each a shape of its own.
    scale = (training_batches(utterance_lengths(FOLD_TRAIN_UTTERANCES, seed=1), run.phase, run.config)
             / training_batches(lengths["train"], run.phase, run.config))
    epochs = record["epochs"]
    updates_per_epoch = (epochs[0]["num_updates"] if epochs else len(steps)) * scale
    if run.phase == "pretraining":
        full_updates, fold_validation_utterances = FULL_PRETRAINING_UPDATES, FOLD_PRETRAIN_VALID_UTTERANCES
        full_epochs = full_updates / updates_per_epoch
    else:
        full_epochs, fold_validation_utterances = FULL_FINETUNING_EPOCHS, FOLD_FINETUNE_VALID_UTTERANCES
        full_updates = full_epochs * updates_per_epoch
    fold_validation = utterance_lengths(fold_validation_utterances, seed=2)
    valid_scale = (validation_samples(fold_validation, run.phase, run.config)
                   / validation_samples(lengths["valid"], run.phase, run.config))
    valid_batch_scale = (validation_batches(fold_validation, run.phase, run.config)
                         / validation_batches(lengths["valid"], run.phase, run.config))
    checkpoint, dataset = run.config["checkpoint"], run.config["dataset"]
    full_validations = count_events(full_updates, full_epochs, dataset["validate_interval"],
                                    dataset["validate_interval_updates"])
    full_saves = count_events(full_updates, full_epochs, checkpoint["save_interval"],
                              checkpoint["save_interval_updates"])
    # A fold's validation computes on `valid_scale` times the samples; what it spends once
    # (its first batch, set-up, logging) it spends once there too. Its batch shapes are new
    # to the GPU in the first validation only.
    warm, validation_new_shapes = warm_validations(record)
    parts = validation_parts(record, warm)
    scaled_validation = (parts.once_per_validation + parts.per_batch * valid_scale if parts
                         else sum(b - a for a, b in warm) * valid_scale)
    per_validation = scaled_validation / max(1, len(warm))
    per_save = saving / max(1, len(record["saves"]))
    # Waiting within epochs scales with the updates, at epoch ends with the epochs: a short
    # run over few utterances has far more epoch ends per update than a full one.
    full_waiting = sum(statistics.mean(part) * count for part, count in zip(gaps, (full_updates, full_epochs)) if part)
    projected_startup = startup if startup_after_imports is None else startup_after_imports
    full_fixed = (projected_startup + exit_seconds + full_validations * per_validation + full_saves * per_save
                  + full_waiting + new_shapes * scale + validation_new_shapes * valid_batch_scale)
    full_steps = full_updates * mean_step
    return Summary(
        updates_per_second=updates_per_second, audio_per_second=audio_per_second,
        flops_per_audio_second=flops_per_audio_second, mfu=mfu,
        kernel_seconds=busy, busy_in_step=busy / mean_step if busy is not None else None,
        attention=", ".join(profiled.get("attention", [])) or "-",
        startup=startup, startup_after_imports=startup_after_imports, in_steps=in_steps, new_shapes=new_shapes, validation=validation, validations=len(record["validations"]),
        saving=saving, saves=len(record["saves"]), waiting=waiting, exit=exit_seconds,
        outside_share=outside / wall, projected_outside_share=full_fixed / (full_fixed + full_steps),
        parts=profiled.get("parts_seconds", {}), top_ops=profiled.get("top_ops", []),
        gaps_within_epochs=gaps[0], gaps_at_epoch_ends=gaps[1],
        batch_waits_within_epochs=batch_waits_within_epochs(record), validation_parts=parts,
        validation_new_shapes=validation_new_shapes,
        host_waits=profiled.get("host_waits"),
    )


def format_row(run: Run, summary: Summary) -> str:
    def number(value: Optional[float], spec: str, scale: float = 1.0) -> str:
        return "-" if value is None else format(value * scale, spec)

    memory = run.record.get("peak_memory_gib")
    return (
        f"| {run.checkout} | {run.precision} | {run.phase} | {summary.updates_per_second:.2f} | "
        f"{summary.audio_per_second:.0f} | {number(summary.flops_per_audio_second, '.3g', 1e-9)} | "
        f"{number(summary.mfu, '.1f', 100)} | {number(memory, '.1f')} | {summary.attention} | "
        f"{number(summary.busy_in_step, '.0f', 100)} | {summary.startup:.1f} | {summary.in_steps:.1f} | "
        f"{summary.new_shapes:.1f} | "
        f"{summary.validation:.1f} ({summary.validations}) | {summary.saving:.1f} ({summary.saves}) | "
        f"{summary.waiting:.1f} | {summary.exit:.1f} | {100 * summary.outside_share:.0f} | "
        f"{100 * summary.projected_outside_share:.1f} |"
    )


TABLE_HEADER = (
    "| checkout | precision | phase | updates/s | audio s/s | GFLOP per audio s | MFU % | peak GPU memory (GiB) "
    "| attention kernel | GPU busy in step % | start-up (s) | in steps (s) | new shapes (s) | validation (s, n) "
    "| saving (s, n) "
    "| waiting (s) | exit (s) | outside steps % | outside steps %, full fold run (projected) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def format_details(run: Run, summary: Summary) -> str:
    names = {"forward": "forward and backward"}
    parts = ", ".join(f"{names.get(name, name)} {seconds * 1000:.1f} ms" for name, seconds in summary.parts.items())
    top = ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in summary.top_ops[:5])
    kernels = f"kernels {summary.kernel_seconds * 1000:.1f} ms in all, " if summary.kernel_seconds is not None else ""
    within, across = summary.gaps_within_epochs, summary.gaps_at_epoch_ends
    gaps = (f"mean {1000 * statistics.mean(within):.1f} ms (median {1000 * statistics.median(within):.1f}) "
            f"within an epoch" if within else "none within an epoch")
    waits = summary.batch_waits_within_epochs
    gaps += (f", of which {1000 * statistics.mean(waits):.1f} ms waiting for the next batch" if waits else "")
    gaps += (f", mean {1000 * statistics.mean(across):.1f} ms at {len(across)} epoch end(s)" if across else "")
    validating = summary.validation_parts
    validations = ""
    if validating and validating.validations:
        count = validating.validations
        validations = (f"; a validation with batch shapes seen before: "
                       f"{1000 * (validating.once_per_validation + validating.per_batch) / count:.0f} ms, of which "
                       f"{1000 * validating.steps / count:.0f} ms in its steps, "
                       f"{1000 * validating.first_batch_waits / count:.0f} ms waiting for its first batch, "
                       f"{1000 * validating.later_batch_waits / count:.0f} ms for the others; "
                       f"the first validation {1000 * summary.validation_new_shapes:.0f} ms more (new shapes)")
    waits = ""
    if summary.host_waits is not None:
        count, seconds = summary.host_waits
        waits = f"; the host waited for the GPU {count} time(s), {1000 * seconds:.1f} ms in all"
    startup = (f"; start-up after the imports (as the recipe's trainings start): {summary.startup_after_imports:.1f} s"
               if summary.startup_after_imports is not None else "")
    return (f"- {run.checkout} {run.precision} {run.phase}: profiled step: {kernels}{parts or '-'}; "
            f"operators by their own time: {top or '-'}{waits}; between steps (validation and saving left out): {gaps}"
            f"{validations}{startup}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--precision", nargs="+", choices=sorted(PRECISION_OVERRIDES), default=["bf16"])
    parser.add_argument("--size", choices=["base", "tiny"], help="default: base on cuda, tiny on cpu")
    parser.add_argument("--phases", nargs="+", choices=sorted(PHASES), default=["pretraining", "finetuning"])
    parser.add_argument("--updates", type=int, help="updates per run (default: 100 on cuda, 8 on cpu)")
    parser.add_argument("--utterances", type=int, help="generated training utterances (default: 800 on cuda, 24 on cpu)")
    parser.add_argument("--checkouts", nargs="+", default=[str(REPO_ROOT)], help="project copies to run, in turn")
    parser.add_argument("--names", nargs="+", help="a name for each checkout in the table (default: directory names)")
    parser.add_argument("--candidates", nargs="+", default=[],
                        help="also run the first checkout with each of these: a fast_paths value "
                             "(all,-NAME, all+NAME, ...) or a fairseq-hydra-train override (key=value)")
    parser.add_argument("--overrides", nargs="*", default=[], help="more fairseq-hydra-train overrides for every run")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak for MFU (default: from its name)")
    parser.add_argument("--work-dir", help="default: a new temporary directory")
    parser.add_argument("--table", help="also write the table here (markdown)")
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    args.size = args.size or ("base" if on_gpu else "tiny")
    args.updates = args.updates or (100 if on_gpu else 8)
    args.utterances = args.utterances or (800 if on_gpu else 24)
    names = args.names or [Path(checkout).resolve().name for checkout in args.checkouts]
    if len(names) != len(args.checkouts):
        parser.error("--names needs one name per checkout")
    for candidate in (c for c in args.candidates if "=" not in c):
        try:
            parse_fast_paths(candidate)
        except ValueError as error:  # one line, before the corpus is written
            print(f"error: --candidates: {error}; or a fairseq-hydra-train override key=value", file=sys.stderr)
            return 2
    if args.updates <= COUNT_AT + 1:
        parser.error(f"--updates must be above {COUNT_AT + 1} (warm-up, a counted and a profiled step)")
    import torch

    if on_gpu and not torch.cuda.is_available():
        print("error: no CUDA device (--device cpu runs the tiny smoke test)", file=sys.stderr)
        return 1
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="flea_train_throughput_")).resolve()
    data, stand_in = work / "data", work / "stand_in.pt"
    started = time.time()
    tapt = OmegaConf.load(REPO_ROOT / "config" / "pretrain" / f"tapt_{args.size}.yaml")
    # fairseq refuses a training utterance above the batch's max_tokens (tapt_tiny's: 10 s).
    seconds = write_corpus(data, args.utterances, min(LONGEST, tapt.dataset.max_tokens / SAMPLE_RATE))
    write_stand_in(stand_in, args.size)
    lengths = {split: np.array(read_manifest(str(data / f"{split}.tsv")).num_samples) for split in ("train", "valid")}
    kept = audio_kept_by_cropping(utterance_lengths(FOLD_TRAIN_UTTERANCES, 1), tapt.dataset.max_tokens, tapt.task)
    print(f"corpus: {args.utterances} training utterances ({seconds['train']:.0f} s), "
          f"{seconds['valid']:.0f} s to validate; {args.size} stand-in; {time.time() - started:.0f} s", flush=True)

    device_name = torch.cuda.get_device_name() if on_gpu else platform.processor() or platform.machine()
    peak = peak_tflops(device_name if on_gpu else None, args.peak_tflops)
    header = (f"{device_name}, torch {torch.__version__}, {args.size} size, {args.updates} updates per run, "
              f"{args.utterances} training utterances; MFU against {peak or '-'} TFLOP/s; tapt_{args.size}'s batches "
              f"keep {100 * kept:.1f} % of an IEMOCAP-like fold's audio (each cropped to its shortest utterance)")
    rows, details, failures = [], [], []
    table = header + "\n"
    runs = [(checkout, name, "") for checkout, name in zip(args.checkouts, names)]
    runs += [(args.checkouts[0], f"{names[0]}+{candidates}", candidates) for candidates in args.candidates]
    for checkout, name, candidates in runs:
        for precision in args.precision:
            for phase in args.phases:
                run = Run(name, precision, phase, candidates)
                try:
                    run_training(run, Path(checkout).resolve(), args, work, data, stand_in)
                except RuntimeError as error:
                    failures.append(str(error))
                    print(f"error: {error}", file=sys.stderr, flush=True)
                    continue
                summary = summarise(run, lengths, peak)
                rows.append(format_row(run, summary))
                details.append(format_details(run, summary))
                table = "\n".join([header, "", TABLE_HEADER, *rows, "", *details]) + "\n"
                print(rows[-1], flush=True)
                if args.table:
                    Path(args.table).write_text(table)
    print(f"\ntraining throughput, {time.time() - started:.0f} s in all, work dir {work}\n\n" + table)
    if failures:
        print(f"error: {len(failures)} run(s) failed; the first: {failures[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
