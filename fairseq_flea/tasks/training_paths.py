"""The fast paths of a training process, taken by both training tasks as their ``fast_paths``
say (``fairseq_flea.hubert.fast_path_names``).

Each is applied where it is needed and when a run trains, never on import or when a model is
only loaded: fairseq calls a task's ``begin_epoch`` and ``train_step`` in a training process
only. What changes there is the training process's own fairseq (its ``save_checkpoint`` and
``set_torch_seed`` attributes), its exit handlers and its optimizer; a model gets the encoder
paths and ``switch_train_mode_only_when_changed`` as its own attributes when it is built.
"""

from typing import AbstractSet, FrozenSet

import torch

from fairseq_flea.hubert.fast_path_names import parse_fast_paths
from fairseq_flea.hubert.fast_paths import attention_without_cudnn, use_fast_paths
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.optim.adamw import FusedAdamW
from fairseq_flea.optim.master_weights import use_foreach_master_weights
from fairseq_flea.tasks.checkpoint_writes import write_checkpoints_in_background
from fairseq_flea.tasks.dummy_batches import read_by_loader_only_in_one_process
from fairseq_flea.tasks.loader_workers import end_loader_workers_first_at_exit
from fairseq_flea.tasks.step_bookkeeping import seed_only_the_devices_present, switch_train_mode_only_when_changed


def fast_paths_of(value: str, field: str) -> FrozenSet[str]:
    """The names a config's ``fast_paths`` value turns on; ``FleaInputError`` for a bad value."""
    try:
        return parse_fast_paths(str(value))
    except ValueError as error:
        raise FleaInputError(f"{field}: {error}") from None


def model_with_fast_paths(model: torch.nn.Module, names: AbstractSet[str]) -> torch.nn.Module:
    """``model`` (a HuBERT pretraining model or the classifier) with the paths of ``names``
    that belong to a model."""
    if "no-cudnn-attention" in names:
        attention_without_cudnn(model)
    if "step-bookkeeping" in names:
        switch_train_mode_only_when_changed(model)
    if "expandable-segments" in names and torch.cuda.is_available():
        # For the allocations after this one, before the trainer moves the model to the GPU;
        # the training process's own allocator (PYTORCH_CUDA_ALLOC_CONF, set by hand).
        set_allocator = (getattr(torch._C, "_accelerator_setAllocatorSettings", None)  # torch >= 2.12
                         or torch.cuda.memory._set_allocator_settings)
        set_allocator("expandable_segments:True")
    return model


class FastPathsTask:
    """Task mixin: the training process's fast paths of ``self.fast_paths`` (a set of names,
    set by the task from its own or its model's config before training starts)."""

    fast_paths: FrozenSet[str] = frozenset()

    def encoder_with_fast_paths(self, encoder: torch.nn.Module) -> torch.nn.Module:
        return use_fast_paths(encoder, self.fast_paths)

    def dataset_with_fast_paths(self, dataset):
        if "dummy-batch-from-step" in self.fast_paths:
            read_by_loader_only_in_one_process(dataset)
        return dataset

    def begin_epoch(self, epoch, model):
        if "background-checkpoints" in self.fast_paths:
            write_checkpoints_in_background()
        if "step-bookkeeping" in self.fast_paths:
            seed_only_the_devices_present()
        if "cudnn-benchmark" in self.fast_paths:
            torch.backends.cudnn.benchmark = True  # this training process's cuDNN, as asked
        return super().begin_epoch(epoch, model)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False, **kwargs):
        self.optimizer_with_fast_paths(optimizer)
        if "loader-worker-exit" in self.fast_paths:
            end_loader_workers_first_at_exit()
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad, **kwargs)

    def valid_step(self, sample, model, criterion):
        if "loader-worker-exit" in self.fast_paths:
            end_loader_workers_first_at_exit()
        return super().valid_step(sample, model, criterion)

    def optimizer_with_fast_paths(self, optimizer) -> None:
        """fairseq builds the optimizer after the task and hands it to every ``train_step``;
        the first one sets it up, before its first update."""
        if getattr(optimizer, "fast_paths_applied", False):
            return
        inner = getattr(optimizer, "fp32_optimizer", optimizer)
        if isinstance(inner, FusedAdamW) and "fused-adamw" not in self.fast_paths:
            inner.use_fairseq_update()
        if "foreach-master-weights" in self.fast_paths:
            use_foreach_master_weights(optimizer)
        optimizer.fast_paths_applied = True

