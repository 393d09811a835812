#!/usr/bin/env python3
"""fairseq-hydra-train with timers, for bench/bench_train_throughput.py: the same command
line and fairseq code path, with the start and end (CUDA synchronised) of every train step,
validation, valid step, checkpoint save and epoch recorded, and of the outermost next() on
fairseq's batch iterators (waiting for data). The first validation runs twice, the second pass
timed apart. Step $FLEA_COUNT_FLOPS_AT runs under FlopCounterMode, step $FLEA_PROFILE_AT under
the PyTorch profiler (table to $FLEA_PROFILE_TABLE); both are left out of the rates.

    FLEA_TRAINING_TIMES=times.json python bench/timed_hydra_train.py --config-dir ... [overrides]
"""

import json
import os
import sys
import time

PROCESS_STARTED = time.time()

import torch  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from fairseq import checkpoint_utils  # noqa: E402
from fairseq.data import iterators  # noqa: E402
from fairseq.trainer import Trainer  # noqa: E402
import fairseq_cli.train as fairseq_train  # noqa: E402
from fairseq_cli.hydra_train import cli_main  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
import torch._dynamo  # noqa: E402,F401  what PyTorch imports when the first optimizer is built

# The recipe's step processes are forked with these imported
# (fairseq_flea.recipe.processes.STEP_PROCESS_MODULES): their start-up is what comes after.
IMPORTS_DONE = time.time()

SAMPLE_RATE = 16000  # every shipped config trains on 16 kHz audio
# Which step (1-based) to count FLOPs of and to profile; 0: none.
COUNT_FLOPS_AT = int(os.environ.get("FLEA_COUNT_FLOPS_AT", "0"))
PROFILE_AT = int(os.environ.get("FLEA_PROFILE_AT", "0"))
ATTENTION_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "memory-efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cuDNN",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "CPU flash",
}
# fairseq's ranges in Trainer.train_step; its "forward" holds forward and backward.
STEP_PARTS = ("forward", "reduce-grads", "multiply-grads", "clip-grads", "optimizer")

record = {"process_started": PROCESS_STARTED, "imports_done": IMPORTS_DONE, "steps": [], "validations": [],
          "saves": [], "epochs": [], "batch_waits": [], "valid_steps": [], "valid_batch_waits": [],
          "warm_validation": []}


def synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def audio_seconds(samples) -> float:
    """Seconds of audio the model sees in a step: unpadded samples of every batch."""
    total = 0
    for sample in samples:
        net_input = (sample or {}).get("net_input", {})
        source = net_input.get("source")
        if source is None:
            continue
        if net_input.get("lengths") is not None:
            total += int(sum(net_input["lengths"]))  # a list, or an older checkout's tensor
        elif net_input.get("padding_mask") is not None:
            total += int((~net_input["padding_mask"]).sum())
        else:
            total += source.numel()
    return total / SAMPLE_RATE


def union_length(spans) -> float:
    """Total length covered by sorted (start, end) spans."""
    covered, reach = 0.0, float("-inf")
    for start, end in spans:
        if end > reach:
            covered += end - max(start, reach)
            reach = end
    return covered


def profile_summary(profile) -> dict:
    """Attention kernels, the device time of the step and of fairseq's parts of it, top ops,
    and [count, seconds] of the host's waits for a CUDA stream (each read of a device value)."""
    averages = profile.key_averages()
    on_gpu = torch.cuda.is_available()
    # On the GPU's timeline the profiler also draws fairseq's ranges ("forward", ...) and the
    # optimizer's: those span gaps between kernels, so only kernels count, overlaps once.
    ranges = {*STEP_PARTS, "backward"}
    kernels = sorted(
        (event.time_range.start, event.time_range.end) for event in profile.events()
        if event.device_type == DeviceType.CUDA and event.name not in ranges
        and not event.name.startswith(("Optimizer.", "ProfilerStep"))
    )

    def device_time(event) -> float:
        return float(event.device_time_total if on_gpu else event.cpu_time_total)

    def self_time(event) -> float:
        return float(event.self_device_time_total if on_gpu else event.self_cpu_time_total)

    # Operators (not fairseq's ranges, the profiler's own or kernels) by the time of their kernels.
    operators = [event for event in averages if event.key.startswith("aten::") and event.device_type != DeviceType.CUDA]
    top = sorted(operators, key=self_time, reverse=True)[:8]
    attention = sorted({ATTENTION_OPS[event.key] for event in averages if event.key in ATTENTION_OPS})
    table_path = os.environ.get("FLEA_PROFILE_TABLE")
    if table_path:
        with open(table_path, "w") as table:
            table.write(averages.table(sort_by="self_cuda_time_total" if on_gpu else "self_cpu_time_total",
                                       row_limit=60, max_name_column_width=90))
    waits = [event for event in profile.events() if event.name == "cudaStreamSynchronize"]
    return {
        "attention": attention,
        "busy_seconds": union_length(kernels) / 1e6 if on_gpu else None,
        "parts_seconds": {event.key: device_time(event) / 1e6 for event in averages if event.key in STEP_PARTS},
        "top_ops": [[event.key, self_time(event) / 1e6] for event in top],
        "host_waits": [len(waits), sum(event.cpu_time_total for event in waits) / 1e6] if on_gpu else None,
    }


def timed(kind: str, function):
    def wrapper(*args, **kwargs):
        synchronize()
        start = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            synchronize()
            record[kind].append([start, time.time()])

    wrapper.__wrapped__ = function
    return wrapper


original_train_step = Trainer.train_step


def timed_train_step(trainer, samples, raise_oom=False):
    number = len(record["steps"]) + 1
    step = {"audio_seconds": audio_seconds(samples)}
    synchronize()
    step["start"] = time.time()
    if number == COUNT_FLOPS_AT:
        with FlopCounterMode(display=False) as counter:
            output = original_train_step(trainer, samples, raise_oom)
        step["flops"] = counter.get_total_flops()
    elif number == PROFILE_AT:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as profile:
            output = original_train_step(trainer, samples, raise_oom)
            synchronize()
        step["profile"] = profile_summary(profile)
    else:
        output = original_train_step(trainer, samples, raise_oom)
    synchronize()
    step["end"] = time.time()
    step["num_updates"] = trainer.get_num_updates()
    record["steps"].append(step)
    return output


original_next_batch = iterators.CountingIterator.__next__
# fairseq nests its iterators (GroupedIterator is a CountingIterator over one): only the
# outermost next() is recorded, apart for training and for validation, whose own waits are
# inside its span.
batch_iterators = {"depth": 0, "validating": False}


def timed_next_batch(iterator):
    outermost = batch_iterators["depth"] == 0
    batch_iterators["depth"] += 1
    start = time.time()
    try:
        return original_next_batch(iterator)
    finally:
        batch_iterators["depth"] -= 1
        if outermost:
            kind = "valid_batch_waits" if batch_iterators["validating"] else "batch_waits"
            record[kind].append([start, time.time()])


def validate_and_once_again(validate):
    """fairseq's validate, timed, its batch waits apart; the first one is followed by a second
    pass over the same batches ("warm_validation", result dropped): what a validation costs
    once its batch shapes are not new, where a short run may validate only once."""
    def validating(*args, **kwargs):
        batch_iterators["validating"] = True
        try:
            return validate(*args, **kwargs)
        finally:
            batch_iterators["validating"] = False

    timed_validate, warm_validate = timed("validations", validating), timed("warm_validation", validating)

    def wrapper(*args, **kwargs):
        result = timed_validate(*args, **kwargs)
        if not record["warm_validation"]:
            warm_validate(*args, **kwargs)
        return result

    return wrapper


original_train = fairseq_train.train


def timed_epoch(cfg, trainer, task, epoch_itr):
    start = time.time()
    result = original_train(cfg, trainer, task, epoch_itr)
    record["epochs"].append({"start": start, "end": time.time(), "num_updates": trainer.get_num_updates()})
    return result


def main() -> None:
    Trainer.train_step = timed_train_step
    fairseq_train.train = timed_epoch
    iterators.CountingIterator.__next__ = timed_next_batch
    fairseq_train.validate = validate_and_once_again(fairseq_train.validate)
    Trainer.valid_step = timed("valid_steps", Trainer.valid_step)
    # fairseq keeps the best score as an attribute of save_checkpoint: keep it on the wrapper.
    checkpoint_utils.save_checkpoint = timed("saves", checkpoint_utils.save_checkpoint)
    try:
        cli_main()
    finally:
        record["training_done"] = time.time()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            record["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            record["device"] = torch.cuda.get_device_name()
        with open(os.environ["FLEA_TRAINING_TIMES"], "w") as output:
            json.dump(record, output)


if __name__ == "__main__":
    sys.exit(main())
