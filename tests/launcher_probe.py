"""Step actions for the launcher tests: module-level, so that step processes can unpickle them."""

import json
import os
import time

from fairseq_flea.io.errors import FleaInputError


def record_devices(record_path: str, seconds: float) -> None:
    """Note the devices this step process was given and when it held them."""
    start = time.time()
    time.sleep(seconds)
    with open(record_path, "w") as record:
        json.dump({"devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}, record)


def fail(message: str) -> None:
    raise FleaInputError(message)
