"""Checkpoints written by a background thread while training goes on.

fairseq's ``save_checkpoint`` stops training while it copies the state to CPU memory,
pickles and writes it, and copies the file to every other name it keeps: TAPT and CPT write
HuBERT base's weights and optimizer state (1.1 GB) as checkpoint_<epoch>_<updates>.pt and
copy it to checkpoint_last.pt every 2,000 updates; fine-tuning writes its weights whenever
validation improves. fairseq's own asynchronous mode (``write_checkpoints_asynchronously``)
needs iopath, writes under the final name (a crash leaves a truncated file that looks whole)
and skips the copies.

With the ``background-checkpoints`` fast path (in ``all``) training waits only
for the copy to CPU memory. A thread then writes the file under a temporary name and renames
it when complete, and gives it its other names as hard links (one write instead of a write
and a full copy; a copy where the filesystem has no hard links). fairseq still decides which
files to write and which old ones to remove, and the files are the ones it would write. One
save at a time: a save first waits for the one before, and so does the end of a run (the
recipe's training, or the process's exit), which fails if a write failed.
"""

import atexit
import contextlib
import logging
import os
import shutil
import sys
import threading
import time
from functools import partial
from typing import Callable, Iterator, List, Optional

import torch
from fairseq import checkpoint_utils, utils
from fairseq.file_io import PathManager

from fairseq_flea.io.atomic_files import atomic_outputs
from fairseq_flea.io.errors import FleaInputError

logger = logging.getLogger(__name__)

# The writer yields the CPU to training's threads where both need it.
WRITER_NICENESS = 10


def copy_to_cpu(sample):
    """fairseq's ``utils.move_to_cpu`` (half-precision tensors as float32), but every tensor a
    copy: fairseq's leaves CPU tensors as they are, and those change as training goes on while
    the state is written."""

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        dtype = torch.float32 if tensor.dtype in (torch.bfloat16, torch.float16) else tensor.dtype
        return tensor.to(device="cpu", dtype=dtype, copy=True)

    return utils.apply_to_sample(copy, sample)


def write_checkpoint_file(state, path: str) -> None:
    """``torch.save`` under a temporary name, renamed to ``path`` when complete."""
    try:
        with atomic_outputs(path) as (partial_path,):
            torch.save(state, partial_path)
    except (OSError, RuntimeError) as error:  # torch's file writer raises RuntimeError
        raise FleaInputError(f"{path}: checkpoint not written ({getattr(error, 'strerror', None) or error})") from None


def link_checkpoint_file(source: str, path: str) -> None:
    """``path`` as another name of the written ``source`` (a hard link, else a copy), put in
    place in one rename."""
    try:
        with atomic_outputs(path) as (partial_path,):
            if os.path.lexists(partial_path):  # left by a killed run: os.link does not replace
                os.remove(partial_path)
            try:
                os.link(source, partial_path)
            except OSError:  # no hard links here (some network and FUSE filesystems)
                shutil.copyfile(source, partial_path)
    except OSError as error:
        raise FleaInputError(f"{path}: checkpoint not written as a copy of {source} ({error.strerror or error})") from None


class BackgroundWriter:
    """One save's file operations at a time, in order, on a thread."""

    def __init__(self):
        self._thread: Optional[threading.Thread] = None
        self._failure: Optional[BaseException] = None

    def start(self, operations: List[Callable[[], None]], description: str) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(operations, description),
                                        name="checkpoint-writer", daemon=True)
        self._thread.start()

    def _run(self, operations: List[Callable[[], None]], description: str) -> None:
        started = time.perf_counter()
        with contextlib.suppress(OSError, AttributeError):  # Linux: this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
        try:
            for operation in operations:
                operation()
        except BaseException as failure:  # raised again by wait(), in the training thread
            self._failure = failure
            return
        logger.info(f"wrote {description} in {time.perf_counter() - started:.1f} s while training went on")

    def wait(self) -> None:
        """Return when the last save's files are written; raise its failure if one failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure


WRITER = BackgroundWriter()


def wait_for_checkpoint_writes() -> None:
    """Return when every checkpoint of this process is written; raise ``FleaInputError`` if
    one could not be."""
    WRITER.wait()


@contextlib.contextmanager
def file_operations_deferred(operations: List[Callable[[], None]]) -> Iterator[List[str]]:
    """Within, fairseq's checkpoint saving copies the state to CPU memory and appends the
    writes and copies it would make to ``operations`` instead of making them; listings of a
    directory include the files to be written, so that fairseq's removal of old checkpoints
    counts them. Yields the list of those files' paths, filled in as they come."""
    to_be_written: List[str] = []

    def save_later(state, filename: str, async_write: bool = False) -> None:
        operations.append(partial(write_checkpoint_file, state, filename))
        to_be_written.append(os.path.abspath(filename))

    def copy_later(source: str, destination: str, overwrite: bool = False) -> bool:
        operations.append(partial(link_checkpoint_file, source, destination))
        to_be_written.append(os.path.abspath(destination))
        return True

    def listing_with_files_to_be_written(path: str) -> List[str]:
        directory = os.path.abspath(path)
        names = set(listing(path))
        names.update(os.path.basename(file) for file in to_be_written if os.path.dirname(file) == directory)
        return sorted(names)

    listing = PathManager.ls
    replaced = [(utils, "move_to_cpu", copy_to_cpu), (checkpoint_utils, "torch_persistent_save", save_later),
                (PathManager, "copy", staticmethod(copy_later)),
                (PathManager, "ls", staticmethod(listing_with_files_to_be_written))]
    originals = [(owner, name, vars(owner)[name]) for owner, name, _ in replaced]
    try:
        for owner, name, replacement in replaced:
            setattr(owner, name, replacement)
        yield to_be_written
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def writes_in_background(trainer) -> bool:
    return "background-checkpoints" in getattr(trainer.task, "fast_paths", ())


def save_checkpoint_in_background(save_checkpoint: Callable):
    """fairseq's ``checkpoint_utils.save_checkpoint`` (``save_checkpoint``), its files written
    by ``WRITER`` when the run's task has the ``background-checkpoints`` fast path."""

    def save(cfg, trainer, epoch_itr, val_loss):
        if not writes_in_background(trainer):
            return save_checkpoint(cfg, trainer, epoch_itr, val_loss)
        WRITER.wait()
        operations: List[Callable[[], None]] = []
        with file_operations_deferred(operations) as paths:
            saved = save_checkpoint(cfg, trainer, epoch_itr, val_loss)
        if operations:
            names = ", ".join(os.path.basename(path) for path in paths)
            WRITER.start(operations, f"{names} (in {os.path.dirname(paths[0])})")
        return saved

    save.__wrapped__ = save_checkpoint
    return save


def _wait_at_exit() -> None:
    try:
        WRITER.wait()
    except Exception as failure:  # noqa: BLE001  (any failure: the file is missing)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        print(f"error: {failure}", file=sys.stderr, flush=True)
        os._exit(1)  # the run's exit status says its checkpoint is missing


def write_checkpoints_in_background() -> None:
    """Let this training process write checkpoints by ``save_checkpoint_in_background``:
    fairseq_cli.train calls ``checkpoint_utils.save_checkpoint`` by its module attribute, so the
    attribute is replaced (once; fairseq keeps the best validation score as an attribute of that
    function, which then lives on the replacement). Called by a training task before its first
    epoch, never on import: a process that only loads models keeps fairseq's function."""
    if hasattr(checkpoint_utils.save_checkpoint, "__wrapped__"):
        return
    checkpoint_utils.save_checkpoint = save_checkpoint_in_background(checkpoint_utils.save_checkpoint)
    # Before the loader workers' handler is registered again (tasks.training_paths), so that it
    # runs after it: atexit runs the last registered first, and this one may end the process.
    atexit.register(_wait_at_exit)
