"""Two things fairseq's trainer does before every training step, done with less CPU time.

On a GPU the steps wait for the CPU (BENCHMARKS.md), so a millisecond of Python per step is
about a percent of the training rate:

- ``Trainer._set_seed`` seeds every random generator with ``common.seed`` plus the update
  number, through ``torch.manual_seed``. That also seeds XPU and MTIA, which on a machine
  without them means recording a Python stack trace for each, to replay the seeding if one
  is ever initialised. ``SetTorchSeed`` seeds the CPU's and CUDA's generators the same way
  and leaves the others to ``torch.manual_seed``, where one of them exists.
- ``Trainer.train_step`` and the task's ``train_step`` call ``model.train()``, which walks all
  of HuBERT's ~200 modules and sets each one's flag, three times a step. With
  ``switch_train_mode_only_when_changed`` a model that is already in the asked mode returns
  at once.

Both leave every generator's state and every module's mode exactly as fairseq's calls do.
"""

import torch
import torch.nn as nn
from fairseq import utils

# Accelerators that torch.manual_seed seeds besides CUDA; fixed for the process.
OTHER_ACCELERATORS = any(
    getattr(torch, name, None) is not None and getattr(torch, name).is_available() for name in ("xpu", "mtia")
) or torch.backends.mps.is_available()


FAIRSEQ_SET_TORCH_SEED = utils.set_torch_seed


class SetTorchSeed(FAIRSEQ_SET_TORCH_SEED):
    """fairseq's ``utils.set_torch_seed``: seeds the CPU's and every CUDA device's generator
    with ``seed`` as ``torch.manual_seed`` does, and as a context manager restores their
    states on exit. fairseq's own runs where XLA, XPU, MTIA or MPS is present."""

    def __init__(self, seed: int):
        if OTHER_ACCELERATORS or getattr(utils, "xm", None) is not None:
            super().__init__(seed)
            return
        assert isinstance(seed, int)
        self.rng_state = utils.get_rng_state()
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)


def _train_when_changed(self: nn.Module, mode: bool = True) -> nn.Module:
    if isinstance(mode, bool) and all(module.training == mode for module in self.modules()):
        return self
    return nn.Module.train(self, mode)


def switch_train_mode_only_when_changed(model: nn.Module) -> nn.Module:
    """Give ``model`` a ``train(mode)`` that returns at once when every module is already in
    ``mode``, unless one of its modules has a ``train`` of its own (its side effects must run)."""
    if all(type(module).train is nn.Module.train for module in model.modules()):
        model.train = _train_when_changed.__get__(model)
    return model


def seed_only_the_devices_present() -> None:
    """Let this training process seed by ``SetTorchSeed``: fairseq's Trainer calls
    ``utils.set_torch_seed`` by its module attribute. Called by a training task before its first
    epoch, never on import."""
    utils.set_torch_seed = SetTorchSeed
