"""The one exception type for bad user input, and how command-line tools report it."""

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


def run_tool(main: Callable[[], None]) -> None:
    """Run a command-line tool's main; a FleaInputError becomes one line on stderr, exit 1."""
    try:
        main()
    except FleaInputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def log_tool_progress() -> None:
    """Tools log at INFO to stdout; importing fairseq has already configured the root logger."""
    logging.basicConfig(
        format="%(levelname)s: %(message)s", level=logging.INFO, stream=sys.stdout, force=True
    )
    # faiss reports at INFO that its AVX2 build is missing before it loads the generic one.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
