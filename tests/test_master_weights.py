"""fairseq's bf16 optimizer with foreach loops updates exactly as fairseq's own loops do."""

from types import MethodType

import pytest
import torch
from fairseq.optim import FairseqOptimizer
from fairseq.optim.fp16_optimizer import FP16Optimizer
from fairseq.utils import clip_grad_norm_
from omegaconf import OmegaConf

import fairseq_flea  # noqa: F401
from fairseq_flea.optim.adamw import FusedAdamW
from fairseq_flea.optim.master_weights import use_foreach_master_weights

CFG = OmegaConf.create({
    "common": {"bf16": True, "fp16": False, "fp16_no_flatten_grads": False, "fp16_init_scale": 128,
               "fp16_scale_window": None, "fp16_scale_tolerance": 0.0, "threshold_loss_scale": None,
               "min_loss_scale": 1e-4, "model_parallel_size": 1},
    "optimization": {"update_freq": [1]},
    "distributed_training": {"distributed_world_size": 1},
    "optimizer": {"_name": "adamw", "adam_betas": "(0.9,0.98)", "adam_eps": 1e-6, "weight_decay": 0.01,
                  "use_old_adam": False, "fp16_adam_stats": False, "tpu": False, "lr": [1e-2]},
})


def bf16_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 8),
                                torch.nn.LayerNorm(8), torch.nn.Linear(8, 3), torch.nn.Linear(3, 3))
    model[0].bias.requires_grad_(False)  # a frozen weight
    return model.to(torch.bfloat16)


def train(optimizer: FP16Optimizer, model: torch.nn.Module, steps: int):
    """The trainer's calls, step by step; the last layer is skipped in odd steps, as
    layer-drop skips a layer (its weights then have no gradient)."""
    norms = []
    for step in range(steps):
        optimizer.zero_grad()
        torch.manual_seed(100 + step)
        hidden = model[:5](torch.randn(5, 6, dtype=torch.bfloat16))
        output = hidden if step % 2 else model[5](hidden)
        optimizer.backward(output.float().pow(2).sum())
        optimizer.multiply_grads(0.5)
        norms.append(optimizer.clip_grad_norm(0.05))  # small: the gradients are clipped
        optimizer.step()
    return norms


def test_foreach_loops_update_exactly_as_fairseqs_loops():
    fairseq_model, foreach_model = bf16_model(0), bf16_model(0)
    fairseq_params = [p for p in fairseq_model.parameters() if p.requires_grad]
    foreach_params = [p for p in foreach_model.parameters() if p.requires_grad]
    reference = FP16Optimizer.build_optimizer(CFG, fairseq_params)
    # fairseq's own clipping too: one norm per tensor (utils.clip_grad_norm_).
    reference.fp32_optimizer.clip_grad_norm = MethodType(FairseqOptimizer.clip_grad_norm, reference.fp32_optimizer)
    changed = FP16Optimizer.build_optimizer(CFG, foreach_params)
    assert use_foreach_master_weights(changed) and use_foreach_master_weights(changed)
    assert not reference.has_flat_params and isinstance(changed.fp32_optimizer, FusedAdamW)

    reference_norms, changed_norms = train(reference, fairseq_model, 4), train(changed, foreach_model, 4)

    assert torch.equal(torch.stack(reference_norms), torch.stack(changed_norms))
    assert all(norm > 0.05 for norm in changed_norms)
    for before, after in zip(fairseq_model.state_dict().values(), foreach_model.state_dict().values()):
        assert after.dtype == torch.bfloat16 and torch.equal(before, after)
    for before, after in zip(reference.fp32_params, changed.fp32_params):
        assert torch.equal(before, after) and torch.equal(before.grad, after.grad)
    assert not torch.equal(fairseq_model[5].weight, bf16_model(0)[5].weight)  # the weights did train


def test_only_fairseqs_per_tensor_master_weights_are_changed():
    fp32_optimizer = FusedAdamW(CFG.optimizer, list(bf16_model(0).float().parameters()))
    assert not use_foreach_master_weights(fp32_optimizer)
    assert not hasattr(fp32_optimizer, "foreach_master_weights")


@pytest.mark.parametrize("max_norm", [0.0, 0.01, 1e3])
def test_fused_adamw_clips_as_fairseq_does(max_norm):
    fairseq_model, fused_model = bf16_model(1).float(), bf16_model(1).float()
    for model in (fairseq_model, fused_model):
        model(torch.randn(4, 6, generator=torch.Generator().manual_seed(3))).pow(2).sum().backward()
    fused = FusedAdamW(CFG.optimizer, list(fused_model.parameters()))

    expected = clip_grad_norm_(list(fairseq_model.parameters()), max_norm)
    assert torch.equal(fused.clip_grad_norm(max_norm), expected)
    for before, after in zip(fairseq_model.parameters(), fused_model.parameters()):
        assert (before.grad is None and after.grad is None) or torch.equal(before.grad, after.grad)
