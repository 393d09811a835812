"""fairseq-hydra-train (the same command line, fairseq's own cli_main) that records its first
update for tests/test_fast_paths_switch.py: the logged loss, every weight's gradient as the
optimizer took it, the weights after the update, and which of fairseq's functions and model
methods the run replaced. With FLEA_PROBE_FIXED_MASKS=1 every time mask is a fixed pattern,
for fairseq's numpy draws and the device draws alike, so that runs that draw masks differently
can be compared; the masks are still applied by each run's own code.

    FLEA_PROBE_OUT=first_update.pt python tests/first_update_probe.py --config-dir ... [overrides]
"""

import os
import sys

import numpy as np
import torch
from fairseq import checkpoint_utils, utils
from fairseq.models.hubert import hubert as fairseq_hubert
from fairseq.trainer import Trainer
from fairseq_cli.hydra_train import cli_main

FAIRSEQ_SAVE_CHECKPOINT, FAIRSEQ_SET_TORCH_SEED = checkpoint_utils.save_checkpoint, utils.set_torch_seed
MODULE_OVERRIDES = ("forward", "apply_mask", "compute_nce", "train")


def fixed_mask(batch: int, frames: int) -> np.ndarray:
    """Every other run of 10 frames, shifted by the row: the same for any draw."""
    positions = np.arange(frames)[None, :] + 3 * np.arange(batch)[:, None]
    return (positions // 10) % 2 == 0


def fixed_numpy_mask(shape, padding_mask, *args, **kwargs) -> np.ndarray:
    return fixed_mask(*shape)


def fixed_device_mask(shape, padding_mask, mask_prob, mask_length, min_masks, device) -> torch.Tensor:
    return torch.from_numpy(fixed_mask(*shape)).to(device)


def replaced_parts(model: torch.nn.Module) -> list:
    parts = [f"{name or 'model'}.{attribute}" for name, module in model.named_modules()
             for attribute in MODULE_OVERRIDES if attribute in vars(module)]
    if checkpoint_utils.save_checkpoint is not FAIRSEQ_SAVE_CHECKPOINT:
        parts.append("checkpoint_utils.save_checkpoint")
    if utils.set_torch_seed is not FAIRSEQ_SET_TORCH_SEED:
        parts.append("utils.set_torch_seed")
    return parts


original_train_step = Trainer.train_step
original_trainer_init = Trainer.__init__


def trainer_init_with_fixed_masks(trainer, *args, **kwargs):
    # Here, after fairseq has imported the run's user dir: importing it first would fail
    # fairseq's check that the user dir is the module already loaded.
    from fairseq_flea.hubert import time_masks

    fairseq_hubert.compute_mask_indices = fixed_numpy_mask
    time_masks.span_time_mask = fixed_device_mask
    original_trainer_init(trainer, *args, **kwargs)


def recorded_train_step(trainer, samples, raise_oom=False):
    first = trainer.get_num_updates() == 0
    logging_output = original_train_step(trainer, samples, raise_oom)
    if first:
        model = trainer.model
        torch.save({
            "loss": float(logging_output["loss"]),
            "gradients": {name: p.grad.detach().float().clone() for name, p in model.named_parameters()
                          if p.grad is not None},
            "weights": {name: p.detach().float().clone() for name, p in model.named_parameters()},
            "replaced": replaced_parts(model),
            "optimizer": type(getattr(trainer.optimizer, "fp32_optimizer", trainer.optimizer).optimizer).__module__,
        }, os.environ["FLEA_PROBE_OUT"])
    return logging_output


if __name__ == "__main__":
    if os.environ.get("FLEA_PROBE_FIXED_MASKS") == "1":
        Trainer.__init__ = trainer_init_with_fixed_masks
    Trainer.train_step = recorded_train_step
    sys.exit(cli_main())
