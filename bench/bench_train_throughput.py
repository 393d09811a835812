#!/usr/bin/env python3
"""Training throughput: N updates of TAPT (tapt_*) and of ser_attention fine-tuning through
fairseq-hydra-train (bench/timed_hydra_train.py) with the shipped configs, on generated audio
of IEMOCAP-like lengths, from a random HuBERT-base-size (or tiny) stand-in checkpoint.

One row per run: updates/s and audio s/s (after the first epoch, where every batch shape was
seen; waits for data included), GFLOP per audio second and MFU (torch.utils.flop_counter,
which counts nothing for FFTs: compare rows by audio s/s), peak memory, the attention kernel,
GPU busy share, and the time outside the steps: start-up, new batch shapes, validation,
saving, waiting, exit, and that share projected to a full run on one IEMOCAP fold. Rows to
compare run in one process on one machine: --checkouts (other copies of the project, e.g.
from `git worktree add`), --candidates (the first checkout with a value of the configs'
fast_paths, task.fast_paths or model.fast_paths by phase, or with a fairseq-hydra-train
override key=value).

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
# IEMOCAP's lengths (median 3.6 s), log-normal, within 0.6-20 s (tiny: 10 s, tapt_tiny's batch).
MEDIAN_SECONDS, LOG_SPREAD, SHORTEST, LONGEST = 3.6, 0.6, 0.6, 20.0
# One IEMOCAP fold: 4 sessions train, 5 % of them validate pretraining, one speaker of the
# held-out session fine-tuning. The projection batches a fold's drawn lengths as fairseq would:
# an epoch's updates and new shapes scale by the training batches, a validation's steps by the
# samples it computes on; what a validation spends once (first batch, set-up) stays.
FOLD_TRAIN_UTTERANCES = 4425
FOLD_PRETRAIN_VALID_UTTERANCES = 221
FOLD_FINETUNE_VALID_UTTERANCES = 553
FULL_PRETRAINING_UPDATES = 20000
FULL_FINETUNING_EPOCHS = 40
# Dense bf16/fp16 tensor-core peak from NVIDIA's data sheets, TFLOP/s, by device name.
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
               ("A100", 312.0), ("L40S", 362.0), ("A10", 125.0), ("L4", 121.0)]
# Steps 1-3 warm up; step 4's FLOPs are counted; one of the last steps is profiled. Every
# epoch has the same batch shapes and a new shape is slower (kernel selection, allocator), so
# rates come after the first epoch, whose extra time is a fixed cost ("new shapes"); with too
# few steps after it, from step 5 on.
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
    """Training utterances as the dataset counts them (at most task.max_sample_size), without
    those fairseq leaves out (pretraining: under task.min_sample_size; above max_tokens)."""
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
    """The share of a corpus's audio HuBERT pretraining sees, each batch cropped to its shortest."""
    counted = counted_training_sizes(sizes, "pretraining", task, max_tokens)
    return batched_samples(counted, max_tokens, None, cropped=True) / float(sizes.sum())


def validated_sizes(sizes: np.ndarray, phase: str, config: dict) -> np.ndarray:
    """The lengths a validation batches (pretraining: at most task.max_sample_size), without
    those above max_tokens_valid (skip_invalid_size_inputs_valid_test)."""
    if phase == "pretraining":
        sizes = np.minimum(sizes, config["task"]["max_sample_size"])
    max_tokens = config["dataset"]["max_tokens_valid"]
    return sizes[sizes <= max_tokens] if max_tokens else sizes


def validation_samples(sizes: np.ndarray, phase: str, config: dict) -> int:
    """The samples a validation computes on: pretraining crops each batch to its shortest,
    fine-tuning pads each to its longest."""
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
    checkout: str  # its name in the table, with the candidate
    precision: str
    phase: str
    candidate: str = ""
    record: dict = field(default_factory=dict)
    spawned: float = 0.0
    ended: float = 0.0
    config: dict = field(default_factory=dict)


def train_command(checkout: Path, phase: str, size: str, data: Path, stand_in: Path, save_dir: Path,
                  precision: str, device: str, updates: int, extra: Sequence[str] = ()) -> List[str]:
    """A short run of the phase on the generated corpus, through the timed fairseq-hydra-train."""
    config_group, config_stem = PHASES[phase]
    inputs = ([f"task.label_dir={data}", "task.labels=[km]", f"task.init_from={stand_in}"] if phase == "pretraining"
              else [f"model.w2v_path={stand_in}"])
    return [sys.executable, str(REPO_ROOT / "bench" / "timed_hydra_train.py"),
            "--config-dir", str(checkout / "config" / config_group), "--config-name", f"{config_stem}_{size}",
            f"common.user_dir={checkout / 'fairseq_flea'}", f"common.cpu={str(device == 'cpu').lower()}",
            *PRECISION_OVERRIDES[precision], f"checkpoint.save_dir={save_dir}", f"optimization.max_update={updates}",
            f"task.data={data}", *inputs, *extra]


def candidate_overrides(candidate: str, phase: str) -> List[str]:
    """A --candidates value as overrides: key=value as it is, else a fast_paths value on the
    phase's field, quoted (hydra reads an unquoted comma as a list)."""
    if "=" in candidate or not candidate:
        return [candidate] if candidate else []
    return [f'{"task" if phase == "pretraining" else "model"}.fast_paths="{candidate}"']


def run_directory(name: str) -> str:
    """A run's directory: no "=", "," or quotes, which hydra's checkpoint.save_dir refuses."""
    return re.sub(r"[^\w.+-]+", "-", name)


def run_training(run: Run, checkout: Path, args, work: Path, data: Path, stand_in: Path) -> Run:
    run_dir = work / run_directory(run.checkout) / run.precision / run.phase
    # fairseq would resume from an earlier run's checkpoints in a reused --work-dir and train nothing.
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    times_path = run_dir / "times.json"
    command = train_command(checkout, run.phase, args.size, data, stand_in, run_dir / "checkpoints", run.precision,
                            args.device, args.updates, [*args.overrides, *candidate_overrides(run.candidate, run.phase)])
    env = {**os.environ, "FLEA_TRAINING_TIMES": str(times_path), "FLEA_PROFILE_TABLE": str(run_dir / "profile.txt"),
           "FLEA_COUNT_FLOPS_AT": str(COUNT_AT), "FLEA_PROFILE_AT": str(profile_step(args.updates)),
           "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")])}
    log_path = run_dir / "train.log"
    with open(log_path, "w") as log:
        run.spawned = time.time()
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run_dir)
        run.ended = time.time()
    if finished.returncode != 0 or not times_path.is_file():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{run.checkout} {run.precision} {run.phase} failed (see {log_path}): {' | '.join(tail)}")
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
    first_batch_waits: float  # next() before each validation's first step
    later_batch_waits: float  # next() after it, for batches the loader reads during the steps
    rest: float  # setting up the iterator, switching the model, reducing and logging metrics

    @property
    def once_per_validation(self) -> float:
        return self.first_batch_waits + self.rest

    @property
    def per_batch(self) -> float:
        return self.steps + self.later_batch_waits


def warm_validations(record: dict) -> Tuple[List[List[float]], float]:
    """The validations whose batch shapes the GPU had seen (the later ones and the bench's
    second pass over the first one's batches), and the first one's extra seconds above that pass."""
    if not record["warm_validation"]:  # a run that never validated
        return record["validations"], 0.0
    (first_start, first_end), (warm_start, warm_end) = record["validations"][0], record["warm_validation"][0]
    return ([*record["validations"][1:], *record["warm_validation"]],
            max(0.0, (first_end - first_start) - (warm_end - warm_start)))


def validation_parts(record: dict, validations: Sequence[Sequence[float]]) -> ValidationParts:
    """Where the time of these validations of the record went."""
    steps = first = later = rest = 0.0
    for start, end in validations:
        in_steps = overlap(record["valid_steps"], start, end)
        first_step = min((a for a, _ in record["valid_steps"] if start <= a <= end), default=end)
        waits = [(a, b) for a, b in record["valid_batch_waits"] if start <= a and b <= end]
        before_first_step = sum(b - a for a, b in waits if b <= first_step)
        after = sum(b - a for a, b in waits if b > first_step)
        steps, first, later = steps + in_steps, first + before_first_step, later + after
        rest += end - start - in_steps - before_first_step - after
    return ValidationParts(len(validations), steps, first, later, rest)


def validations_and_saves(record: dict) -> List[List[float]]:
    """The spans in which a run validated (the bench's second pass included) or saved."""
    return [*record["validations"], *record["warm_validation"], *record["saves"]]


def spans_between_steps(record: dict) -> Iterator[Tuple[float, float, float, bool]]:
    """Each span from a step's end to the next one's start: (start, end, its seconds without
    validation and saving, whether an epoch ended in it)."""
    interruptions = validations_and_saves(record)
    epoch_ends = [epoch["end"] for epoch in record["epochs"]]
    for before, after in zip(record["steps"], record["steps"][1:]):
        start, end = before["end"], after["start"]
        gap = end - start - overlap(interruptions, start, end)
        yield start, end, gap, any(start <= moment <= end for moment in epoch_ends)


def gaps_between_steps(record: dict) -> Tuple[List[float], List[float]]:
    """Seconds between steps, validation and saving left out: within epochs, across their ends."""
    within, across = [], []
    for _, _, gap, epoch_ended in spans_between_steps(record):
        (across if epoch_ended else within).append(gap)
    return within, across


def batch_waits_within_epochs(record: dict) -> List[float]:
    """Of each gap between steps within an epoch, the seconds in next() on fairseq's batch iterator."""
    return [overlap(record["batch_waits"], start, end) for start, end, _, epoch_ended in spans_between_steps(record)
            if not epoch_ended]


def instrumented(step: dict) -> bool:
    """FLOPs counted or profiled: slower, left out of the rates."""
    return "flops" in step or "profile" in step


def steady_steps(record: dict) -> Tuple[List[dict], List[dict]]:
    """The steps the rates come from (after the first epoch; else from step WARM_UP + 1 on),
    and the first epoch's steps (none when the rates include them); instrumented steps left out."""
    steps, epochs = record["steps"], record["epochs"]
    if len(epochs) > 1:
        first_epoch_end = epochs[0]["end"]
        later = [s for s in steps if s["start"] > first_epoch_end and not instrumented(s)]
        if len(later) >= STEADY_AT_LEAST:
            return later, [s for s in steps if s["start"] <= first_epoch_end]
    return [s for number, s in enumerate(steps, 1) if number > WARM_UP and not instrumented(s)], []


def mean_ms(values: Sequence[float]) -> str:
    return f"{1000 * statistics.mean(values):.1f} ms"


def report(run: Run, lengths: Dict[str, np.ndarray], peak: Optional[float]) -> Tuple[str, str]:
    """The run's table row and its details line: rates, times, and the share outside the
    steps projected to one IEMOCAP fold; ``lengths``: the samples of each utterance of the
    run's "train" and "valid" splits."""
    record, config, phase = run.record, run.config, run.phase
    steps = record["steps"]
    steady, first_epoch = steady_steps(record)
    window_start, window_end = steady[0]["start"], steady[-1]["end"]
    interruptions = [*validations_and_saves(record), *[[s["start"], s["end"]] for s in steps if instrumented(s)]]
    window = window_end - window_start - overlap(interruptions, window_start, window_end)
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
    saving = sum(b - a for a, b in record["saves"])
    gaps = gaps_between_steps(record)
    startup = steps[0]["start"] - run.spawned
    # The recipe forks its trainings from a process with torch, fairseq and torch._dynamo imported.
    startup_after_imports = steps[0]["start"] - record["imports_done"]
    exit_seconds = run.ended - record["training_done"]
    # The bench's second pass over the first validation is no part of a run.
    wall = run.ended - run.spawned - sum(b - a for a, b in record["warm_validation"])

    # A full run on one IEMOCAP fold: its epoch has `scale` times the batches, each a shape of its own.
    scale = (training_batches(utterance_lengths(FOLD_TRAIN_UTTERANCES, seed=1), phase, config)
             / training_batches(lengths["train"], phase, config))
    epochs = record["epochs"]
    updates_per_epoch = (epochs[0]["num_updates"] if epochs else len(steps)) * scale
    if phase == "pretraining":
        full_updates, fold_validation_utterances = FULL_PRETRAINING_UPDATES, FOLD_PRETRAIN_VALID_UTTERANCES
        full_epochs = full_updates / updates_per_epoch
    else:
        full_epochs, fold_validation_utterances = FULL_FINETUNING_EPOCHS, FOLD_FINETUNE_VALID_UTTERANCES
        full_updates = full_epochs * updates_per_epoch
    fold_validation = utterance_lengths(fold_validation_utterances, seed=2)
    valid_scale = validation_samples(fold_validation, phase, config) / validation_samples(lengths["valid"], phase, config)
    valid_batch_scale = (validation_batches(fold_validation, phase, config)
                         / validation_batches(lengths["valid"], phase, config))
    checkpoint, dataset = config["checkpoint"], config["dataset"]
    full_validations = count_events(full_updates, full_epochs, dataset["validate_interval"],
                                    dataset["validate_interval_updates"])
    full_saves = count_events(full_updates, full_epochs, checkpoint["save_interval"], checkpoint["save_interval_updates"])
    # A fold's validation computes on `valid_scale` times the samples; what it spends once it
    # spends once there too; its batch shapes are new in the first validation only.
    warm, validation_new_shapes = warm_validations(record)
    parts = validation_parts(record, warm)
    per_validation = (parts.once_per_validation + parts.per_batch * valid_scale) / max(1, len(warm))
    # Waiting within epochs scales with the updates, at epoch ends with the epochs.
    full_waiting = sum(statistics.mean(part) * count for part, count in zip(gaps, (full_updates, full_epochs)) if part)
    full_fixed = (startup_after_imports + exit_seconds + full_validations * per_validation
                  + full_saves * saving / max(1, len(record["saves"])) + full_waiting + new_shapes * scale
                  + validation_new_shapes * valid_batch_scale)
    projected_share = full_fixed / (full_fixed + full_updates * mean_step)

    def number(value: Optional[float], spec: str, factor: float = 1.0) -> str:
        return "-" if value is None else format(value * factor, spec)

    row = (f"| {run.checkout} | {run.precision} | {phase} | {len(steady) / window:.2f} | {audio_per_second:.0f} | "
           f"{number(flops_per_audio_second, '.3g', 1e-9)} | {number(mfu, '.1f', 100)} | "
           f"{number(record.get('peak_memory_gib'), '.1f')} | {', '.join(profiled.get('attention', [])) or '-'} | "
           f"{number(busy and busy / mean_step, '.0f', 100)} | {startup:.1f} | {in_steps:.1f} | {new_shapes:.1f} | "
           f"{sum(b - a for a, b in record['validations']):.1f} ({len(record['validations'])}) | "
           f"{saving:.1f} ({len(record['saves'])}) | {sum(gaps[0]) + sum(gaps[1]):.1f} | {exit_seconds:.1f} | "
           f"{100 * (wall - in_steps) / wall:.0f} | {100 * projected_share:.1f} |")

    names = {"forward": "forward and backward"}
    step_parts = ", ".join(f"{names.get(name, name)} {seconds * 1000:.1f} ms"
                           for name, seconds in profiled.get("parts_seconds", {}).items())
    top = ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in profiled.get("top_ops", [])[:5])
    kernels = f"kernels {busy * 1000:.1f} ms in all, " if busy is not None else ""
    within, across = gaps
    between = (f"mean {mean_ms(within)} (median {1000 * statistics.median(within):.1f}) within an epoch"
               if within else "none within an epoch")
    waits = batch_waits_within_epochs(record)
    between += f", of which {mean_ms(waits)} waiting for the next batch" if waits else ""
    between += f", mean {mean_ms(across)} at {len(across)} epoch end(s)" if across else ""
    validations = ""
    if parts.validations:
        count = parts.validations
        validations = (f"; a validation with batch shapes seen before: "
                       f"{1000 * (parts.once_per_validation + parts.per_batch) / count:.0f} ms, of which "
                       f"{1000 * parts.steps / count:.0f} ms in its steps, "
                       f"{1000 * parts.first_batch_waits / count:.0f} ms waiting for its first batch, "
                       f"{1000 * parts.later_batch_waits / count:.0f} ms for the others; "
                       f"the first validation {1000 * validation_new_shapes:.0f} ms more (new shapes)")
    host = profiled.get("host_waits")
    host = f"; the host waited for the GPU {host[0]} time(s), {1000 * host[1]:.1f} ms in all" if host else ""
    details = (f"- {run.checkout} {run.precision} {phase}: profiled step: {kernels}{step_parts or '-'}; "
               f"operators by their own time: {top or '-'}{host}; between steps (validation and saving left out): "
               f"{between}{validations}; start-up after the imports (as the recipe's trainings start): "
               f"{startup_after_imports:.1f} s")
    return row, details


TABLE_HEADER = (
    "| checkout | precision | phase | updates/s | audio s/s | GFLOP per audio s | MFU % | peak GPU memory (GiB) "
    "| attention kernel | GPU busy in step % | start-up (s) | in steps (s) | new shapes (s) | validation (s, n) "
    "| saving (s, n) | waiting (s) | exit (s) | outside steps % | outside steps %, full fold run (projected) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


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
    runs += [(args.checkouts[0], f"{names[0]}+{candidate}", candidate) for candidate in args.candidates]
    for checkout, name, candidate in runs:
        for precision in args.precision:
            for phase in args.phases:
                run = Run(name, precision, phase, candidate)
                try:
                    run_training(run, Path(checkout).resolve(), args, work, data, stand_in)
                except RuntimeError as error:
                    failures.append(str(error))
                    print(f"error: {error}", file=sys.stderr, flush=True)
                    continue
                row, detail = report(run, lengths, peak)
                rows.append(row)
                details.append(detail)
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
