"""Optimizer ``adamw``: fairseq's ``adam`` (decoupled weight decay, the same settings and
state) with PyTorch's fused ``torch.optim.AdamW`` doing the update.

Without NVIDIA apex, fairseq's ``adam`` falls back to its own Python Adam, a loop of about
eight elementwise operations per weight tensor; in bf16 fairseq keeps the fp32 master weights
as separate tensors (in fp16 as one flat tensor), and the loop took 22 ms of an H100's time
per HuBERT-base update (bench/bench_train_throughput.py). The fused AdamW updates all tensors
in one pass, and gradient clipping takes all their norms in one foreach call.

Without the ``fused-adamw`` fast path the training task hands the optimizer back to fairseq
before the first update (``use_fairseq_update``): the same update as ``optimizer: adam``.
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
        self.fused_update = True

    def use_fairseq_update(self) -> None:
        """Update and clip as fairseq's ``adam`` does, from now on; before the first update only
        (the state starts empty). The parameter groups keep their learning rate, which the
        scheduler set when it was built."""
        if self.fused_update:
            FairseqAdam.__init__(self, self.cfg, self._optimizer.param_groups)
            self.fused_update = False

    @property
    def supports_flat_params(self) -> bool:
        return True  # fp16 hands it one flat fp32 tensor of all weights

    def clip_grad_norm(self, max_norm, aggregate_norm_fn=None) -> torch.Tensor:
        """fairseq's ``clip_grad_norm_``, with the gradients' norms taken by one foreach call
        instead of one call per weight tensor."""
        if not self.fused_update:
            return super().clip_grad_norm(max_norm, aggregate_norm_fn)
        params = list(self.params)
        grads = [p.grad for p in params if getattr(p, "grad", None) is not None]
        if (len(grads) < 2 or any(g.dtype != torch.float32 or g.device != grads[0].device for g in grads)
                or any(hasattr(p, "expert") for p in params)):  # fairseq's special cases
            return super().clip_grad_norm(max_norm, aggregate_norm_fn)
        # torch.nn.utils.get_total_norm(grads, 2.0, foreach=True) on one device, without its
        # .to(device) call per tensor: ~200 operator calls an update, each on the CPU's time
        total_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        if aggregate_norm_fn is not None:
            total_norm = aggregate_norm_fn(total_norm)
        if max_norm > 0:
            clip_coef = (float(max_norm) / (total_norm + 1e-6)).clamp_(max=1)
            torch._foreach_mul_(grads, clip_coef)
        return total_norm
