"""Writing outputs so that a crashed run never leaves a file that looks complete."""

import contextlib
import os
from typing import Iterator, List


@contextlib.contextmanager
def atomic_outputs(*paths: str) -> Iterator[List[str]]:
    """Yield temporary names for ``paths``; rename them into place only if the block succeeds."""
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = [f"{path}.partial" for path in paths]
    try:
        yield temporary
    except BaseException:
        for partial in temporary:
            if os.path.exists(partial):
                os.remove(partial)
        raise
    for partial, path in zip(temporary, paths):
        os.replace(partial, path)


def write_text_atomically(path: str, text: str) -> None:
    """Write a whole text file under a temporary name and rename it into place."""
    with atomic_outputs(path) as (partial,):
        with open(partial, "w") as output:
            output.write(text)
