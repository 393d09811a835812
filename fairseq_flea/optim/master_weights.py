"""fairseq's mixed-precision optimizer with its per-tensor loops done as foreach operations.

In bf16 (and fp16 with ``common.fp16_no_flatten_grads``) fairseq's ``FP16Optimizer`` keeps
an fp32 master copy of every weight tensor and walks the ~200 tensors of HuBERT base one at a
time, four times an update: copying the gradients to the masters, taking each one's norm for
clipping (``adamw.FusedAdamW.clip_grad_norm`` takes them in one call), zeroing them, and
copying the updated masters back. Each visit is a Python call and a kernel launch, and
fairseq's training steps on a GPU wait for the CPU, not for the GPU (BENCHMARKS.md). Here
each of those loops is one foreach call: the same copies and zeros, launched as a few
multi-tensor kernels. Flat master weights (fp16's default) need no loop for zeros; they are
left to fairseq.
"""

import logging
from types import MethodType
from typing import List, Tuple

import torch
from fairseq.optim.fp16_optimizer import FP16Optimizer

logger = logging.getLogger(__name__)


def _trained_pairs(self: FP16Optimizer) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """(weight, its fp32 master) for every weight that trains."""
    return [(p, p32) for p, p32 in zip(self.fp16_params, self.fp32_params) if p.requires_grad]


def _sync_fp16_grads_to_fp32(self: FP16Optimizer) -> None:
    if not self._needs_sync:
        return
    trained = _trained_pairs(self)
    copied = [(p32.grad, p.grad) for p, p32 in trained if p.grad is not None and p32.grad is not None]
    if copied:
        with torch.no_grad():
            torch._foreach_copy_([master for master, _ in copied], [grad for _, grad in copied])
    # A weight without a gradient (in a layer that layer-drop skipped) keeps the zeros that
    # zero_grad, which the trainer calls before every step, left in its master's gradient.
    for p, p32 in trained:
        if p32.grad is None:
            p32.grad = p.grad.float() if p.grad is not None else torch.zeros_like(p32)
    self._needs_sync = False


def _sync_fp32_params_to_fp16(self: FP16Optimizer) -> None:
    trained = _trained_pairs(self)
    if trained:
        with torch.no_grad():
            torch._foreach_copy_([p for p, _ in trained], [p32 for _, p32 in trained])


def _zero_grad(self: FP16Optimizer) -> None:
    for p in self.fp16_params:
        p.grad = None
    grads = [p32.grad for p32 in self.fp32_params if p32.grad is not None]
    if grads:
        torch._foreach_zero_(grads)
    self._needs_sync = False
    if self.scaler is not None:
        self._multiply_factor = 1.0 / float(self.scaler.loss_scale)


def use_foreach_master_weights(optimizer) -> bool:
    """Give ``optimizer``, if it is fairseq's FP16Optimizer with one fp32 master tensor per
    weight, foreach versions of its per-tensor loops; returns whether it now has them.
    Repeating the call changes nothing."""
    if not isinstance(optimizer, FP16Optimizer) or optimizer.has_flat_params:
        return False
    if not getattr(optimizer, "foreach_master_weights", False):
        optimizer._sync_fp16_grads_to_fp32 = MethodType(_sync_fp16_grads_to_fp32, optimizer)
        optimizer._sync_fp32_params_to_fp16 = MethodType(_sync_fp32_params_to_fp16, optimizer)
        optimizer.zero_grad = MethodType(_zero_grad, optimizer)
        optimizer.foreach_master_weights = True
        logger.info("fp32 master weights: gradients, zeros and weights copied by foreach operations")
    return True
