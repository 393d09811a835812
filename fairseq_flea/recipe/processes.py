"""Processes the recipe starts: steps in a child of their own, where fairseq-hydra-train runs.

Every child ends when the recipe dies (even by kill -9), so a killed recipe leaves no
training or feature dump running; a step's child reports a bad input as a
``FleaInputError`` and anything else as a one-line ``FleaStepError``.
"""

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from fairseq_flea.io.errors import FleaInputError, FleaStepError, log_tool_progress

logger = logging.getLogger(__name__)

PLUGIN_DIR = Path(__file__).resolve().parents[1]
# What step processes import: the server forks each of them with these modules loaded, so a
# step starts in milliseconds, not seconds. Training runs in the step's process (hydra_train),
# so fairseq's trainer and torch._dynamo, which PyTorch imports when the first optimizer is
# built, are imported once per recipe instead of once per training run (BENCHMARKS.md).
STEP_PROCESS_MODULES = ["fairseq_flea.units.layer_features", "fairseq_flea.units.kmeans",
                        "fairseq_flea.evaluation.evaluate", "fairseq_cli.hydra_train", "torch._dynamo"]


@contextlib.contextmanager
def output_to(log_path: str) -> Iterator[None]:
    """This process's stdout and stderr, its children's included, appended to ``log_path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log_path, "a") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def hydra_train_argv(config_dir: str, config_name: str, overrides: Sequence[str]) -> List[str]:
    """fairseq-hydra-train's command line with the plugin, from any working directory."""
    return ["fairseq-hydra-train", "--config-dir", config_dir, "--config-name", config_name,
            f"common.user_dir={PLUGIN_DIR}", *overrides]


def hydra_train(config_dir: str, config_name: str, overrides: Sequence[str], log_path: str) -> None:
    """fairseq-hydra-train (``hydra_train_argv``) in this process, which must be a step's own
    (``start_in_own_process``, a SLURM job) and end after the step: hydra and fairseq keep
    global state. Its output goes to ``log_path``; a failed run raises ``FleaStepError``, a
    checkpoint it could not write ``FleaInputError``."""
    from fairseq_cli.hydra_train import cli_main
    from hydra.core.global_hydra import GlobalHydra

    failed = False
    saved_argv, sys.argv = sys.argv, hydra_train_argv(config_dir, config_name, overrides)
    try:
        with output_to(log_path):
            GlobalHydra.instance().clear()
            try:
                cli_main()
            except SystemExit as exit:  # how hydra reports a failed run
                failed = exit.code not in (None, 0)
            except Exception:
                traceback.print_exc()
                failed = True
    finally:
        sys.argv = saved_argv
        # The step's process ends by os._exit, which runs no atexit handler: end the kept
        # loader workers and finish the checkpoint writes here, as fairseq-hydra-train's own
        # exit would.
        from fairseq_flea.tasks.checkpoint_writes import wait_for_checkpoint_writes
        from fairseq_flea.tasks.loader_workers import end_persistent_loader_workers, log_ended

        log_ended(end_persistent_loader_workers())
        wait_for_checkpoint_writes()  # a checkpoint that could not be written: FleaInputError
    if failed:
        with open(log_path) as log:
            last_lines = log.read().strip().splitlines()[-3:]
        raise FleaStepError(f"fairseq-hydra-train {config_name} failed (see {log_path}): {' | '.join(last_lines)}")


_LIFELINE: Optional[tuple] = None


def lifeline(context) -> multiprocessing.connection.Connection:
    """The reading end of a pipe whose only writing end this process holds, for its step
    processes: it reaches end-of-file when this process dies. Their Linux parent is the fork
    server, which outlives us (every child holds its liveness pipe), so Linux's parent-death
    signal would not end them."""
    global _LIFELINE
    if _LIFELINE is None or _LIFELINE[0] != os.getpid():
        _LIFELINE = (os.getpid(), *context.Pipe(duplex=False))
    return _LIFELINE[1]


def end_with(lifeline_end: multiprocessing.connection.Connection) -> None:
    """End this process (SIGTERM: its own children then end with it) when ``lifeline_end``
    reaches end-of-file."""
    def watch() -> None:
        try:
            lifeline_end.recv_bytes()
        except (EOFError, OSError):
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="lifeline").start()


def _step_process_main(action: Callable[[], object], connection, env: Dict[str, str], log_path: Optional[str],
                       lifeline_end: multiprocessing.connection.Connection) -> None:
    end_with(lifeline_end)
    os.environ.update(env)
    with output_to(log_path) if log_path is not None else contextlib.nullcontext():
        log_tool_progress()
        try:
            connection.send(("result", action()))
        except FleaInputError as error:
            connection.send(("input", str(error)))
        except FleaStepError as error:  # already one line
            connection.send(("failed", str(error)))
        except BaseException as error:  # reported to the parent as one line; the traceback goes to the log
            traceback.print_exc()
            connection.send(("failed", f"{type(error).__name__}: {error}"))


@dataclass
class StepProcess:
    """A step running in a child process: wait on ``sentinel``, then call ``result``."""

    description: str
    process: multiprocessing.Process
    connection: multiprocessing.connection.Connection

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    def result(self) -> object:
        """The action's return value; its error, as ``FleaInputError`` or ``FleaStepError``."""
        try:
            message = self.connection.recv() if self.connection.poll() else None
        except EOFError:  # the child died before it could say how it ended
            message = None
        self.process.join()
        if message is None:
            raise FleaStepError(f"{self.description}: its process ended abruptly (killed, or out of memory)")
        kind, value = message
        if kind == "input":
            raise FleaInputError(value)
        if kind == "failed":
            raise FleaStepError(f"{self.description}: {value}")
        return value

    def stop(self) -> None:
        """End the child (and, through its own end-with-parent, the training it started)."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()


def start_in_own_process(action: Callable[[], object], description: str, env: Optional[Dict[str, str]] = None,
                         log_path: Optional[str] = None) -> StepProcess:
    """Start ``action`` (picklable) in a child forked from a server that has the project
    imported; ``env`` is set in the child before anything runs (``CUDA_VISIBLE_DEVICES``);
    its output goes to ``log_path`` when given.

    Steps that load a model run in a child so that everything they held (GPU memory kept by
    PyTorch's caching allocator) goes back to the system when they end."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(STEP_PROCESS_MODULES)
    receiving, sending = context.Pipe(duplex=False)
    process = context.Process(target=_step_process_main, name=description,
                              args=(action, sending, dict(env or {}), log_path, lifeline(context)))
    process.start()
    sending.close()
    return StepProcess(description, process, receiving)


def run_in_own_process(action: Callable[[], object], description: str) -> object:
    """``action`` in a child process of its own (``start_in_own_process``); its result."""
    step = start_in_own_process(action, description)
    try:
        multiprocessing.connection.wait([step.sentinel, step.connection])
        return step.result()
    finally:
        step.stop()
