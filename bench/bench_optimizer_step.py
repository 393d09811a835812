#!/usr/bin/env python3
"""The optimizer's part of a bf16 training update, fairseq's loops against ours, in one run.

After the backward, fairseq's trainer asks its mixed-precision optimizer (``FP16Optimizer``:
bf16 weights, fp32 master copies, one per weight tensor) to scale the gradients, clip them
and step, and zeroes them before the next backward. fairseq does the copies, norms and zeros
one weight tensor at a time; ``fairseq_flea.optim`` does each as one foreach call. This bench
times that sequence for both over the same HuBERT weights, alternately, and checks that they
end with the same weights:

- host: how long the Python calls took before waiting for the device;
- update: the whole sequence, device included;
- launches: kernels launched per update (CUDA), or operators dispatched (CPU, where foreach
  operations run their per-tensor loop in C++: fewer Python calls, as many operators).

On CUDA it runs HuBERT base's weights; on CPU the same ~200 tensors at tiny width (12
layers of 64 dims), where the per-tensor overhead, not the arithmetic, sets the time.

    python bench/bench_optimizer_step.py --device cuda
    python bench/bench_optimizer_step.py --device cpu
"""

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from types import MethodType
from typing import Dict, List

import torch
from fairseq.dataclass.utils import merge_with_parent
from fairseq.models.hubert import HubertConfig, HubertModel
from fairseq.optim import FairseqOptimizer
from fairseq.optim.fp16_optimizer import FP16Optimizer
from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench_encoder_step import synchronize, units_dictionary  # noqa: E402

import fairseq_flea  # noqa: E402,F401  (registers the adamw optimizer)
from fairseq_flea.optim.master_weights import use_foreach_master_weights  # noqa: E402

# HuBERT base's depth at tiny width: as many weight tensors as base, little arithmetic.
NARROW = {"encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 2, "final_dim": 32,
          "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", "conv_pos": 16, "conv_pos_groups": 4}
CLIP_NORM = 10.0  # the shipped configs' optimization.clip_norm
VARIANTS = ("fairseq", "foreach")


def optimizer_config() -> "OmegaConf":
    """The settings fairseq's trainer builds the bf16 optimizer from, as in config/pretrain/tapt_base.yaml."""
    config = OmegaConf.load(REPO_ROOT / "config" / "pretrain" / "tapt_base.yaml")
    return OmegaConf.create({
        "common": {"bf16": True, "fp16": False, "fp16_no_flatten_grads": False, "fp16_init_scale": 128,
                   "fp16_scale_window": None, "fp16_scale_tolerance": 0.0, "threshold_loss_scale": None,
                   "min_loss_scale": 1e-4, "model_parallel_size": 1},
        "optimization": {"update_freq": [1]},
        "distributed_training": {"distributed_world_size": 1},
        "optimizer": {**OmegaConf.to_container(config.optimizer), "use_old_adam": False, "fp16_adam_stats": False,
                      "tpu": False, "lr": list(config.optimization.lr)},
    })


def hubert_weights(narrow: bool, device: str) -> List[torch.nn.Parameter]:
    torch.manual_seed(0)
    architecture = {"_name": "hubert", "label_rate": 50, **(NARROW if narrow else {})}
    model = HubertModel(merge_with_parent(HubertConfig(), OmegaConf.create(architecture)),
                        HubertPretrainingConfig(labels=["km"], label_rate=50), [units_dictionary()])
    return [p for p in model.to(device=device, dtype=torch.bfloat16).parameters() if p.requires_grad]


def build_optimizer(variant: str, weights: List[torch.nn.Parameter]) -> FP16Optimizer:
    optimizer = FP16Optimizer.build_optimizer(optimizer_config(), weights)
    if variant == "fairseq":  # fairseq's per-tensor clipping too (utils.clip_grad_norm_)
        optimizer.fp32_optimizer.clip_grad_norm = MethodType(FairseqOptimizer.clip_grad_norm, optimizer.fp32_optimizer)
    else:
        use_foreach_master_weights(optimizer)
    optimizer.set_lr(1e-4)
    return optimizer


def update(optimizer: FP16Optimizer, weights, grads) -> None:
    """The trainer's optimizer calls of one update, from zero_grad to step."""
    optimizer.zero_grad()
    for weight, grad in zip(weights, grads):
        weight.grad = grad  # what the backward leaves
    optimizer._needs_sync = True  # what FP16Optimizer.backward records
    optimizer.multiply_grads(1.0 / 8)
    optimizer.clip_grad_norm(CLIP_NORM)
    optimizer.step()


def launches(device: str, optimizer, weights, grads) -> int:
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.profiler.profile(activities=activities) as profile:
        update(optimizer, weights, grads)
        synchronize(device)
    events = profile.key_averages()
    if device == "cuda":
        return sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    return sum(e.count for e in events if e.key.startswith("aten::"))


def run(device: str, narrow: bool, updates: int) -> Dict[str, Dict[str, float]]:
    weights = {variant: hubert_weights(narrow, device) for variant in VARIANTS}
    generator = torch.Generator(device=device).manual_seed(1)
    grads = [torch.randn(w.shape, generator=generator, device=device).to(torch.bfloat16) for w in weights["fairseq"]]
    optimizers = {variant: build_optimizer(variant, weights[variant]) for variant in VARIANTS}
    host, total = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    for index in range(updates + 3):
        for variant in VARIANTS:  # alternately: the machine's drift hits both
            synchronize(device)
            start = time.perf_counter()
            update(optimizers[variant], weights[variant], grads)
            issued = time.perf_counter()
            synchronize(device)
            if index >= 3:  # warm-up: allocator, first-call caches
                host[variant].append(issued - start)
                total[variant].append(time.perf_counter() - start)
    difference = max(float((a.detach().float() - b.detach().float()).abs().max())
                     for a, b in zip(weights["fairseq"], weights["foreach"]))
    results = {}
    for variant in VARIANTS:
        results[variant] = {"host_ms": 1e3 * statistics.median(host[variant]),
                            "update_ms": 1e3 * statistics.median(total[variant]),
                            "launches": launches(device, optimizers[variant], weights[variant], grads)}
    results["foreach"]["max_weight_difference"] = difference
    results["tensors"] = len(grads)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=["base", "narrow"], help="default: base on cuda, narrow on cpu")
    parser.add_argument("--updates", type=int, default=50, help="timed updates per variant (default: 50)")
    args = parser.parse_args()
    logging.getLogger("fairseq").setLevel(logging.WARNING)  # each model's config, twice
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    size = args.size or ("base" if args.device == "cuda" else "narrow")
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    results = run(args.device, size == "narrow", args.updates)
    print(f"# bf16 optimizer update, HuBERT {size} weights ({results['tensors']} tensors), {machine}, "
          f"torch {torch.__version__}, median of {args.updates}")
    print("| variant | host ms | update ms | launches |")
    print("|---|---|---|---|")
    for variant in VARIANTS:
        row = results[variant]
        print(f"| {variant} | {row['host_ms']:.2f} | {row['update_ms']:.2f} | {row['launches']} |")
    fairseq, foreach = results["fairseq"], results["foreach"]
    print(f"foreach against fairseq: update {fairseq['update_ms'] / foreach['update_ms']:.2f}x faster, "
          f"host {fairseq['host_ms'] / foreach['host_ms']:.2f}x, launches {fairseq['launches']} -> {foreach['launches']}; "
          f"largest weight difference after {args.updates + 3} updates: {foreach['max_weight_difference']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
