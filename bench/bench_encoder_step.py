#!/usr/bin/env python3
"""One HuBERT training step, forward and backward, timed for each way through the encoder:
which attention kernels PyTorch may choose, and how the positional convolution runs.

bench_train_throughput.py times whole fairseq runs; this one asks, in a minute or two of a
GPU, which candidate change makes the step itself faster, before it goes into the configs.
Each variant runs in its own process (PyTorch's and cuDNN's caches start empty) over the
same batches of the shipped configs' shapes (TAPT: length buckets cropped to their shortest;
fine-tuning: up to 64 padded utterances), drawn from IEMOCAP-like lengths, all different:

- cold: the first pass over these shapes, as in a run's first epoch;
- warm: the same batches again, as in later epochs;
- host: how long the Python calls took before waiting for the GPU (near "warm": the GPU waits
  for the CPU);
- operators: operators called from Python or autograd in one step (each a dispatch on the
  CPU's time, on a GPU about one kernel launch), the same count on any device;
- Δ loss: the loss of the first batch with dropout off and fixed masks, against the current
  path's (exactness).

Variants: current (as the tasks train today: fairseq_flea.hubert.fast_paths), cudnn-benchmark
(cuDNN times its convolution algorithms per shape), cudnn-attention (PyTorch's cuDNN
attention kernel allowed again), conv-pos-conv (fairseq's positional convolution instead of
the FFT), fft-exact-length (the FFTs as long as the padded input, not of fast sizes),
fairseq-time-masks (fairseq's per-utterance numpy mask draw instead of the
device's), fairseq-attention (fairseq's attention forward, through PyTorch's general
multi_head_attention_forward, instead of the direct one) and compiled-layers (each
transformer layer through torch.compile: fused kernels, to rounding; its first pass
includes the compiling).

    python bench/bench_encoder_step.py --device cuda            # base size, bf16
    python bench/bench_encoder_step.py --device cpu             # tiny smoke test
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench_train_throughput import LABEL_RATE, SAMPLE_RATE, UNITS, utterance_lengths  # noqa: E402
from fairseq.data import Dictionary  # noqa: E402
from fairseq.dataclass.utils import merge_with_parent  # noqa: E402
from fairseq.models.hubert import HubertConfig, HubertModel  # noqa: E402
from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig  # noqa: E402
from timed_hydra_train import ATTENTION_OPS, CANDIDATE_CHANGES, apply_candidate_changes  # noqa: E402

from fairseq_flea.hubert.fast_paths import batches_never_padded, use_fast_training_paths  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
VARIANTS = ["current", *CANDIDATE_CHANGES]
PHASE_CONFIGS = {"pretraining": ("pretrain", "tapt"), "finetuning": ("finetune", "ser_attention")}
# Training-time model settings read from the phase's config, where it has them.
TRAINING_SETTINGS = ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "dropout_input",
                     "dropout_features", "mask_prob", "mask_length", "feature_grad_mult")
FEATURE_PENALTY_WEIGHT = 10.0  # tapt_base's criterion.loss_weights
CLASSES = 4


def phase_config(phase: str, size: str):
    group, stem = PHASE_CONFIGS[phase]
    return OmegaConf.load(REPO_ROOT / "config" / group / f"{stem}_{size}.yaml")


def units_dictionary() -> Dictionary:
    """The released k-means model's labels, 0 to UNITS - 1, as fairseq's HuBERT takes them."""
    dictionary = Dictionary()
    for unit in range(UNITS):
        dictionary.add_symbol(str(unit))
    return dictionary


def build_model(phase: str, size: str) -> HubertModel:
    """fairseq's HubertModel of the size's architecture with the phase's training settings,
    the tasks' fast paths applied (and, for fine-tuning, a linear emotion head)."""
    architecture = {"_name": "hubert", "label_rate": LABEL_RATE}
    if size == "tiny":
        architecture = dict(OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "config/pretrain/hubert_tiny.yaml").model))
    settings = phase_config(phase, size).model
    architecture.update({key: settings[key] for key in TRAINING_SETTINGS if key in settings})
    torch.manual_seed(0)
    model = HubertModel(merge_with_parent(HubertConfig(), OmegaConf.create(architecture)),
                        HubertPretrainingConfig(labels=["km"], label_rate=LABEL_RATE), [units_dictionary()])
    if phase == "finetuning":
        model.remove_pretraining_modules()
        model.emotion_head = torch.nn.Linear(model.encoder.embedding_dim, CLASSES)
        return use_fast_training_paths(model)
    # As the pretraining task builds it: its batches are cropped, never padded.
    return batches_never_padded(use_fast_training_paths(model))


def batch_lengths(phase: str, size: str, count: int) -> List[List[int]]:
    """The lengths in samples of each of ``count`` batches the phase's config would make."""
    config = phase_config(phase, size)
    dataset, task = config.dataset, config.task
    # Both tasks crop training audio to max_sample_size.
    lengths = np.minimum(np.sort(utterance_lengths(64 * count, seed=3)), task.max_sample_size)
    if phase == "pretraining":
        # Length buckets cropped to their shortest member: one crop length per batch.
        crops = [int(crop) for crop in lengths[:: 64][:count]]
        return [[crop] * max(1, dataset.max_tokens // crop) for crop in crops]
    batches = []
    for start in range(0, len(lengths), 64):
        members = lengths[start:start + 64]
        fitting = max(1, min(dataset.get("batch_size") or 64, dataset.max_tokens // int(members.max())))
        batches.append([int(length) for length in members[-fitting:]])
    return batches[:count]


def make_batch(lengths: List[int], device: str, dtype: torch.dtype, seed: int) -> Dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    source = torch.randn(len(lengths), longest, generator=generator)
    padding_mask = torch.arange(longest)[None, :] >= torch.tensor(lengths)[:, None]
    frames = longest // (SAMPLE_RATE // LABEL_RATE)
    return {
        "source": source.masked_fill(padding_mask, 0).to(device, dtype),
        "padding_mask": padding_mask.to(device),
        "units": torch.randint(0, UNITS, (len(lengths), frames), generator=generator).to(device),
        "emotions": torch.randint(0, CLASSES, (len(lengths),), generator=generator).to(device),
        "audio_seconds": sum(lengths) / SAMPLE_RATE,
    }


def training_loss(model: HubertModel, phase: str, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The phase's loss as fairseq's criteria compute it: masked prediction with the feature
    penalty; cross entropy of the pooled encoder output."""
    if phase == "pretraining":
        output = model(batch["source"], target_list=[batch["units"]], padding_mask=batch["padding_mask"])
        logits = model.get_logits(output, is_masked=True)[0]
        loss = F.cross_entropy(logits.float(), torch.zeros(len(logits), dtype=torch.long, device=logits.device),
                               reduction="sum")
        return loss + FEATURE_PENALTY_WEIGHT * output["features_pen"].float() * len(logits)
    features, frame_padding = model.extract_features(batch["source"], padding_mask=batch["padding_mask"], mask=True)
    valid = (~frame_padding if frame_padding is not None else torch.ones_like(features[..., 0], dtype=torch.bool))
    valid = valid.unsqueeze(-1).to(features.dtype)
    pooled = (features * valid).sum(1) / valid.sum(1)
    return F.cross_entropy(model.emotion_head(pooled).float(), batch["emotions"], reduction="sum")


def mask_every_other_frame(x: torch.Tensor, padding_mask, target_list):
    """HubertModel.apply_mask without randomness (fairseq draws masks from fresh entropy),
    for comparing losses across variants."""
    masked = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    masked[:, ::2] = True
    return x, masked


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def operators_called(profile) -> int:
    """Operators called from Python or autograd in a profiled step, not those an operator
    calls itself: each costs the CPU a dispatch (on a GPU, about one launch)."""
    def is_operator(event) -> bool:
        return event.name.startswith("aten::") and event.device_type != DeviceType.CUDA

    def nested(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if is_operator(parent):
                return True
            parent = parent.cpu_parent
        return False

    return sum(1 for event in profile.events() if is_operator(event) and not nested(event))


def run_variant(args) -> Dict:
    """Time one variant in this process; returns its measurements."""
    dtype = DTYPES[args.precision]
    model = build_model(args.phase, args.size).to(args.device, dtype)
    if args.variant != "current":
        apply_candidate_changes(args.variant, model)
    batches = [make_batch(lengths, args.device, dtype, seed)
               for seed, lengths in enumerate(batch_lengths(args.phase, args.size, args.steps))]

    model.eval()  # dropout and layer drop off
    drawn_masks = vars(model).get("apply_mask")  # the variant's own way of drawing them
    model.apply_mask = mask_every_other_frame
    with torch.no_grad():
        first_loss = float(training_loss(model, args.phase, batches[0]))
    if drawn_masks is None:
        del model.apply_mask
    else:
        model.apply_mask = drawn_masks
    model.train()

    passes = {}
    for name in ("cold", "warm"):
        step_seconds, host_seconds = [], []
        for number, batch in enumerate(batches):
            torch.manual_seed(number)
            synchronize(args.device)
            start = time.perf_counter()
            training_loss(model, args.phase, batch).backward()
            host_seconds.append(time.perf_counter() - start)
            synchronize(args.device)
            step_seconds.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
        passes[name] = (sum(step_seconds), sum(host_seconds))

    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if args.device == "cuda" else [])
    torch.manual_seed(0)
    np.random.seed(0)  # fairseq's layer drop draws from numpy: the same layers run in every variant
    with torch.profiler.profile(activities=activities) as profile:
        training_loss(model, args.phase, batches[0]).backward()
        synchronize(args.device)
    attention = sorted({ATTENTION_OPS[event.key] for event in profile.key_averages() if event.key in ATTENTION_OPS})
    audio = sum(batch["audio_seconds"] for batch in batches)
    return {
        "variant": args.variant, "phase": args.phase, "steps": len(batches), "first_loss": first_loss,
        "cold_ms": 1000 * passes["cold"][0] / len(batches), "warm_ms": 1000 * passes["warm"][0] / len(batches),
        "host_ms": 1000 * passes["warm"][1] / len(batches), "audio_per_second": audio / passes["warm"][0],
        "attention": attention, "operators": operators_called(profile),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
    }


def format_table(results: Sequence[Dict], header: str) -> str:
    lines = [header, "", "| phase | variant | cold ms/step | warm ms/step | host ms/step (warm) | operators/step "
             "| audio s/s (warm) | peak GPU memory (GiB) | attention kernel | Δ loss vs current (relative) |",
             "|" + "---|" * 10]
    for result in results:
        reference = next(r for r in results if r["phase"] == result["phase"] and r["variant"] == "current")
        change = abs(result["first_loss"] - reference["first_loss"]) / max(abs(reference["first_loss"]), 1e-12)
        memory = f"{result['peak_gib']:.1f}" if result["peak_gib"] is not None else "-"
        lines.append(f"| {result['phase']} | {result['variant']} | {result['cold_ms']:.1f} | {result['warm_ms']:.1f} "
                     f"| {result['host_ms']:.1f} | {result['operators']} | {result['audio_per_second']:.0f} | {memory} "
                     f"| {', '.join(result['attention']) or '-'} | {change:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--size", choices=["base", "tiny"], help="default: base on cuda, tiny on cpu")
    parser.add_argument("--phases", nargs="+", choices=sorted(PHASE_CONFIGS), default=["pretraining", "finetuning"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--steps", type=int, help="batches per pass (default: 16 on cuda, 3 on cpu)")
    parser.add_argument("--table", help="also write the table here (markdown)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in a child process
    parser.add_argument("--phase", choices=sorted(PHASE_CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size = args.size or ("base" if args.device == "cuda" else "tiny")
    args.steps = args.steps or (16 if args.device == "cuda" else 3)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (--device cpu runs the tiny smoke test)", file=sys.stderr)
        return 1
    if args.variant:
        Path(args.result).write_text(json.dumps(run_variant(args)))
        return 0

    variants = ["current"] + [variant for variant in args.variants if variant != "current"]
    results, failures = [], []
    with tempfile.TemporaryDirectory(prefix="flea_encoder_step_") as work:
        for phase in args.phases:
            for variant in variants:
                result_path = Path(work) / f"{phase}_{variant}.json"
                command = [sys.executable, __file__, "--device", args.device, "--precision", args.precision,
                           "--size", args.size, "--steps", str(args.steps), "--phase", phase,
                           "--variant", variant, "--result", str(result_path)]
                finished = subprocess.run(command, capture_output=True, text=True)
                if finished.returncode != 0 or not result_path.is_file():
                    tail = (finished.stderr or finished.stdout).strip().splitlines()[-1:] or ["no output"]
                    failures.append(f"{phase} {variant}: {tail[0]}")
                    print(f"error: {failures[-1]}", file=sys.stderr, flush=True)
                    if variant == "current":
                        break
                    continue
                results.append(json.loads(result_path.read_text()))
                print(f"{phase} {variant}: warm {results[-1]['warm_ms']:.1f} ms/step", flush=True)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    table = format_table(results, f"{device_name}, torch {torch.__version__}, {args.size} size, {args.precision}, "
                                  f"{args.steps} batches per pass")
    print("\n" + table)
    if args.table:
        Path(args.table).write_text(table)
    if failures:
        print(f"error: {len(failures)} variant(s) failed; the first: {failures[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
