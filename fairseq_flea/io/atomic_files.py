"""Writing outputs so that a crashed run never leaves a file that looks complete, and
checking output locations before any work, so that no tool computes what it cannot save."""

import contextlib
import os
import tempfile
from typing import Iterator, List

from fairseq_flea.io.errors import FleaInputError


def _first_existing(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_output_directory(directory: str) -> None:
    """``directory`` is, or can be made, a directory this process can write in. Nothing is
    made here: a run refused later for another reason leaves no empty directory behind."""
    existing = _first_existing(os.path.abspath(directory))
    if not os.path.isdir(existing):
        raise FleaInputError(f"{directory}: {existing} is a file, so no directory can be made there")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".flea-write-check-"):
            pass
    except OSError as error:
        raise FleaInputError(f"{directory}: cannot write there ({error.strerror})") from None


def check_output_paths(*paths: str) -> None:
    """Each of ``paths`` can be written as a file: it is not a directory and its directory is writable."""
    for path in paths:
        if os.path.isdir(path):
            raise FleaInputError(f"{path}: is a directory; the output is a file, give its file name")
        check_output_directory(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def atomic_outputs(*paths: str) -> Iterator[List[str]]:
    """Yield temporary names for ``paths`` (checked first with ``check_output_paths``);
    rename them into place only if the block succeeds. No ``.partial`` outlives a failure."""
    check_output_paths(*paths)
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = [f"{path}.partial" for path in paths]
    try:
        yield temporary
        for partial, path in zip(temporary, paths):
            try:
                os.replace(partial, path)
            except OSError as error:
                raise FleaInputError(f"{path}: cannot be written ({error.strerror})") from None
    except BaseException:
        for partial in temporary:
            if os.path.exists(partial):
                os.remove(partial)
        raise


def write_text_atomically(path: str, text: str) -> None:
    """Write a whole text file under a temporary name and rename it into place."""
    with atomic_outputs(path) as (partial,):
        with open(partial, "w") as output:
            output.write(text)
