"""Optimizer ``adamw``: fairseq's ``adam`` (decoupled weight decay, the same settings and
state) with PyTorch's fused ``torch.optim.AdamW`` doing the update.

Without NVIDIA apex, fairseq's ``adam`` falls back to its own Python Adam, a loop of about
eight elementwise operations per weight tensor; in bf16 fairseq keeps the fp32 master weights
as separate tensors (in fp16 as one flat tensor), and the loop took 22 ms of an H100's time
per HuBERT-base update (bench/bench_train_throughput.py). The fused AdamW updates all tensors
in one pass.
"""

from dataclasses import dataclass

import torch
from fairseq.optim import register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig


@dataclass
class FusedAdamWConfig(FairseqAdamConfig):
    pass


@register_optimizer("adamw", dataclass=FusedAdamWConfig)
class FusedAdamW(FairseqAdam):
    """AdamW as in the paper, fused where PyTorch has a fused kernel for the weights' device."""

    def __init__(self, cfg: FusedAdamWConfig, params):
        super(FairseqAdam, self).__init__(cfg)
        params = list(params)
        tensors = [p for p in params if isinstance(p, torch.Tensor)] or [
            p for group in params for p in group["params"]
        ]
        fused = all(p.device.type in ("cuda", "cpu") and p.dtype == torch.float32 for p in tensors)
        self._optimizer = torch.optim.AdamW(params, fused=fused, **self.optimizer_config)

    @property
    def supports_flat_params(self) -> bool:
        return True  # fp16 hands it one flat fp32 tensor of all weights
