"""Data-loading workers kept between epochs, ended when training ends.

fairseq's loaders start their worker processes afresh for every epoch and every validation
unless the task keeps them (``task.persistent_workers``). Each start forks the training
process, whose memory makes a fork slow: on the development CPU 0.06-0.28 s for 4 workers,
then ~0.07 s more for their first batch, per loader, per epoch (BENCHMARKS.md).

Kept workers have a cost of their own. fairseq pins loader memory on GPUs, and with pinned
memory PyTorch before its fix of pytorch/pytorch#81794 does not end persistent workers while
Python exits: it waits 5 s for each. With 4 workers for training and 4 for validation that
is the 40-42 s per run an H100 showed after `done training` (the cause as read from
PyTorch's code and that issue). ``end_persistent_loader_workers``
ends them while Python still runs, as that fix does; the recipe calls it when its training
ends, and importing this module registers it to run when Python exits, before PyTorch's own
exit handler marks Python as exiting (``atexit`` runs the last registered first).
"""

import atexit
import gc
import logging

from torch.utils.data import dataloader

logger = logging.getLogger(__name__)


def end_persistent_loader_workers() -> int:
    """End the workers of every data-loader iterator that keeps them between epochs;
    returns how many iterators had workers to end."""
    ended = 0
    for candidate in gc.get_objects():
        # type(), not isinstance: some of torch's deprecated module objects warn when asked.
        if (issubclass(type(candidate), dataloader._MultiProcessingDataLoaderIter)
                and candidate._persistent_workers and not candidate._shutdown):
            candidate._shutdown_workers()
            ended += 1
    return ended


def _end_persistent_loader_workers_at_exit() -> None:
    ended = end_persistent_loader_workers()
    if ended:
        logger.info(f"ended the workers of {ended} data loader(s) kept between epochs")


atexit.register(_end_persistent_loader_workers_at_exit)
