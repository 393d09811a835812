"""Processes the recipe starts: steps in a child of their own, and fairseq-hydra-train.

Every child ends when the recipe dies (even by kill -9), so a killed recipe leaves no
training or feature dump running; a step's child reports a bad input as a
``FleaInputError`` and anything else as a one-line ``FleaStepError``.
"""

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from fairseq_flea.io.errors import FleaInputError, FleaStepError, log_tool_progress

logger = logging.getLogger(__name__)

PLUGIN_DIR = Path(__file__).resolve().parents[1]
# What step processes import: the server forks each of them with these modules loaded, so a
# step starts in milliseconds, not seconds.
STEP_PROCESS_MODULES = ["fairseq_flea.units.layer_features", "fairseq_flea.units.kmeans",
                        "fairseq_flea.evaluation.evaluate"]

LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """In a child, before it runs: ask Linux to end it when its parent dies, even by kill -9
    (a no-op elsewhere). Runs between fork and exec too, so it imports nothing."""
    if LIBC is not None:
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def hydra_train(config_dir: str, config_name: str, overrides: Sequence[str], log_path: str) -> None:
    """fairseq-hydra-train of this environment, with the installed plugin from any working
    directory; its output goes to ``log_path``; it ends if the calling process dies."""
    command = [str(Path(sys.executable).parent / "fairseq-hydra-train"),
               "--config-dir", config_dir, "--config-name", config_name,
               f"common.user_dir={PLUGIN_DIR}", *overrides]
    with open(log_path, "a") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=end_with_parent)
    if finished.returncode != 0:
        with open(log_path) as log:
            last_lines = log.read().strip().splitlines()[-3:]
        raise FleaStepError(f"fairseq-hydra-train {config_name} failed (see {log_path}): {' | '.join(last_lines)}")


_LIFELINE: Optional[tuple] = None


def lifeline(context) -> multiprocessing.connection.Connection:
    """The reading end of a pipe whose only writing end this process holds, for its step
    processes: it reaches end-of-file when this process dies. Their Linux parent is the fork
    server, which outlives us (every child holds its liveness pipe), so end-with-parent
    alone would not end them."""
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
    if log_path is not None:
        with open(log_path, "a") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
    log_tool_progress()
    try:
        connection.send(("result", action()))
    except FleaInputError as error:
        connection.send(("input", str(error)))
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
