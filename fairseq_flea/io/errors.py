"""The exception types for bad user input and for a failed step, and how tools report them."""

import logging
import sys
from typing import Callable

from hydra.errors import CompactHydraException


class FleaInputError(CompactHydraException, ValueError):
    """Bad input a user can fix: a missing file, a malformed line, a wrong setting.

    It derives from Hydra's CompactHydraException because fairseq-hydra-train runs
    inside Hydra, which prints such an exception as its message alone (one line)
    instead of a traceback from deep inside fairseq, and exits with status 1.
    """


class FleaStepError(RuntimeError):
    """A pipeline step that failed on its own (a training process that crashed or was
    killed), not because of input a user can fix: the message names the step and its log."""


def run_tool(main: Callable[[], None]) -> None:
    """Run a command-line tool's main; a FleaInputError or FleaStepError becomes one line on
    stderr, exit 1."""
    try:
        main()
    except (FleaInputError, FleaStepError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


def log_tool_progress() -> None:
    """Tools log at INFO to stdout; importing fairseq has already configured the root logger."""
    logging.basicConfig(
        format="%(levelname)s: %(message)s", level=logging.INFO, stream=sys.stdout, force=True
    )
    # faiss reports at INFO that its AVX2 build is missing before it loads the generic one.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
