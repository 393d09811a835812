"""Data-loading workers kept between epochs, ended when training ends.

fairseq's loaders start their worker processes afresh for every epoch and every validation
unless the task keeps them (``task.persistent_workers``). Each start forks the training
process, whose memory makes a fork slow: on the development CPU 0.06-0.28 s for 4 workers,
then ~0.07 s more for their first batch, per loader, per epoch (BENCHMARKS.md).

Kept workers have a cost of their own at the end. fairseq pins loader memory on GPUs, and for
kept workers with pinned memory PyTorch before its fix of pytorch/pytorch#81794 (2.11, for
one) registers an exit handler per worker as it starts them, which waits 5 s for a worker that
nobody has asked to finish. With 4 workers for training and 4 for validation that was 40-42 s
after `done training` on an H100 and again on an H200, where this module's own exit handler
was seen to run only after those 40 s, then to end the 8 workers in 0.1 s.

So ``end_persistent_loader_workers`` asks every worker of every kept loader to finish at
once, waits for all of them together for a bounded time, and stops those still running by
signal (the workers only read audio, so nothing is lost). With the ``loader-worker-exit`` fast
path, on torch releases without PyTorch's fix, a training task registers its exit handler
again as loaders start (``end_loader_workers_first_at_exit``), after PyTorch's: ``atexit`` runs
the last registered first, so it runs before PyTorch's handlers, which then find the workers
ended. The recipe calls it when each in-process training ends, whatever the torch release.
"""

import atexit
import gc
import logging
import time
from dataclasses import dataclass
from typing import List

from torch.utils.data import dataloader

logger = logging.getLogger(__name__)

GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class EndedLoaderWorkers:
    loaders: int
    workers: int
    stopped_by_signal: int
    seconds: float


def kept_worker_iterators() -> List[dataloader._MultiProcessingDataLoaderIter]:
    """Every live data-loader iterator that keeps its workers between epochs."""
    # type(), not isinstance: some of torch's deprecated module objects warn when asked.
    return [candidate for candidate in gc.get_objects()
            if issubclass(type(candidate), dataloader._MultiProcessingDataLoaderIter)
            and candidate._persistent_workers and not candidate._shutdown]


def _ask_workers_to_finish(iterator: dataloader._MultiProcessingDataLoaderIter, deadline: float) -> None:
    # PyTorch's _shutdown_workers up to its joins: the pin-memory thread first, since workers
    # that end may leave half-written data in the queue it reads.
    iterator._shutdown = True
    if hasattr(iterator, "_pin_memory_thread"):
        iterator._pin_memory_thread_done_event.set()
        iterator._worker_result_queue.put((None, None))
        iterator._pin_memory_thread.join(timeout=max(0.0, deadline - time.monotonic()))
        iterator._worker_result_queue.cancel_join_thread()
        iterator._worker_result_queue.close()
    iterator._workers_done_event.set()
    for worker_id in range(len(iterator._workers)):
        iterator._mark_worker_as_unavailable(worker_id, shutdown=True)


def _join_or_stop_workers(iterator: dataloader._MultiProcessingDataLoaderIter, deadline: float) -> int:
    for worker in iterator._workers:
        worker.join(timeout=max(0.0, deadline - time.monotonic()))
    for index_queue in iterator._index_queues:
        index_queue.cancel_join_thread()
        index_queue.close()
    if iterator._worker_pids_set:  # before any signal: a worker's end must not raise here
        dataloader._utils.signal_handling._remove_worker_pids(id(iterator))
        iterator._worker_pids_set = False
    stopped = 0
    for worker in iterator._workers:
        if worker.is_alive():
            worker.terminate()
            worker.join(timeout=GRACE_SECONDS)
            stopped += 1
    return stopped


def end_persistent_loader_workers(grace_seconds: float = GRACE_SECONDS) -> EndedLoaderWorkers:
    """End the workers of every data-loader iterator that keeps them between epochs: all are
    asked at once, and those not finished within ``grace_seconds`` are stopped by signal."""
    started = time.monotonic()
    deadline = started + grace_seconds
    iterators = kept_worker_iterators()
    for iterator in iterators:
        _ask_workers_to_finish(iterator, deadline)
    stopped = sum(_join_or_stop_workers(iterator, deadline) for iterator in iterators)
    return EndedLoaderWorkers(loaders=len(iterators), workers=sum(len(it._workers) for it in iterators),
                              stopped_by_signal=stopped, seconds=time.monotonic() - started)


def log_ended(ended: EndedLoaderWorkers) -> None:
    if ended.loaders:
        logger.info(f"ended the {ended.workers} workers of {ended.loaders} data loader(s) kept between "
                    f"epochs in {ended.seconds:.1f} s ({ended.stopped_by_signal} stopped by signal)")


def _end_persistent_loader_workers_at_exit() -> None:
    log_ended(end_persistent_loader_workers())


# PyTorch's own fix (one exit handler for all kept iterators, which asks their workers to finish
# first) is in torch 2.13, which CI runs; torch 2.11, on the GPU machines, registers a handler per
# worker. Where the fix is, this module's handler is not needed.
TORCH_WAITS_FOR_EACH_WORKER_AT_EXIT = not hasattr(dataloader._MultiProcessingDataLoaderIter,
                                                  "_register_persistent_workers_atexit")


def end_loader_workers_first_at_exit() -> None:
    """Make this module's exit handler the next to run at exit (``atexit`` runs the last
    registered first), ahead of the handlers PyTorch registered for the workers started so far.
    A training task calls it as loaders start (each training and validation step), in a training
    process only, and only on torch releases without PyTorch's fix."""
    if TORCH_WAITS_FOR_EACH_WORKER_AT_EXIT:
        atexit.unregister(_end_persistent_loader_workers_at_exit)
        atexit.register(_end_persistent_loader_workers_at_exit)
