"""Loader workers kept between epochs end quickly when training ends (tasks.loader_workers)."""

import multiprocessing
import subprocess
import sys
import textwrap
import time

import torch

from fairseq_flea.tasks.loader_workers import end_persistent_loader_workers

# A training process's end as PyTorch before its fix of pytorch/pytorch#81794 (torch 2.11) makes it with
# pinned memory: an exit handler per kept worker, registered as the workers start, that waits
# up to 5 s for the worker. Without pinned memory (no GPU here) PyTorch registers none, so the
# script registers them at the same point, and reports what each finds.
EXIT_AS_TORCH_BEFORE_ITS_FIX = textwrap.dedent("""
    import atexit
    import logging

    import torch
    from torch.utils.data import dataloader

    from fairseq_flea.tasks import loader_workers

    # This torch has PyTorch's fix; the task's handler is what older releases need.
    loader_workers.TORCH_WAITS_FOR_EACH_WORKER_AT_EXIT = True

    logging.basicConfig(level=logging.INFO)


    def wait_for_worker_as_torch_did(worker):
        print("running" if worker.is_alive() else "ended", flush=True)
        worker.join(timeout=5.0)
        if worker.is_alive():
            worker.terminate()


    start_workers = dataloader._MultiProcessingDataLoaderIter._reset


    def start_workers_and_register_their_handlers(iterator, loader, first_iter=False):
        if first_iter and iterator._persistent_workers:
            for worker in iterator._workers:
                atexit.register(wait_for_worker_as_torch_did, worker)
        start_workers(iterator, loader, first_iter)


    dataloader._MultiProcessingDataLoaderIter._reset = start_workers_and_register_their_handlers
    loader = torch.utils.data.DataLoader(list(range(32)), batch_size=4, num_workers=2, persistent_workers=True)
    for epoch in range(2):
        for batch in loader:
            loader_workers.end_loader_workers_first_at_exit()  # as a training task's step does
""")


def test_kept_workers_are_ended_before_pytorchs_exit_handlers_wait_for_them(tmp_path):
    script = tmp_path / "train_and_exit.py"
    script.write_text(EXIT_AS_TORCH_BEFORE_ITS_FIX)
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["ended", "ended"]  # "running" meant 5 s each
    assert "ended the 2 workers of 1 data loader(s) kept between epochs" in finished.stderr
    assert "(0 stopped by signal)" in finished.stderr


class _SlowAfterFirstBatch(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int) -> int:
        if index >= 4:
            time.sleep(600)  # a worker that would not finish when asked
        return index


def test_loader_workers_that_do_not_finish_are_stopped_within_the_grace_time():
    loader = torch.utils.data.DataLoader(_SlowAfterFirstBatch(), batch_size=2, num_workers=2,
                                         persistent_workers=True)
    iterator = iter(loader)
    next(iterator)
    ended = end_persistent_loader_workers(grace_seconds=0.5)
    assert (ended.loaders, ended.workers, ended.stopped_by_signal) == (1, 2, 2)
    assert not multiprocessing.active_children()


def test_the_fix_is_taken_only_where_torch_lacks_its_own():
    from torch.utils.data import dataloader

    from fairseq_flea.tasks.loader_workers import TORCH_WAITS_FOR_EACH_WORKER_AT_EXIT

    assert TORCH_WAITS_FOR_EACH_WORKER_AT_EXIT == (
        not hasattr(dataloader._MultiProcessingDataLoaderIter, "_register_persistent_workers_atexit"))
