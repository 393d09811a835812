"""The ``fast_paths`` switch: which of the project's faster ways through fairseq a run takes.

Every training config has it, on the pretraining task (``task.fast_paths``) and on the
classifier model (``model.fast_paths``). Each name replaces one piece of stock fairseq or
PyTorch code with code that computes the same result faster (the modules named below say how,
and how exactly); ``none`` runs stock fairseq for all of them, ``all`` (the default) takes
every path in ``DEFAULT``. A value is a list of names and ``all``, separated by ``,`` or ``+``;
``-NAME`` leaves one out: ``all,-fft-positional-conv``, ``all+compiled-layers``. On fairseq's
command line a comma needs quotes (``'task.fast_paths="all,-gelu-in-input-dtype"'``), a
``+`` does not (``task.fast_paths=all+compiled-layers``).

Imports nothing: the tools that only parse configs use it too.
"""

from typing import Dict, FrozenSet

# name -> what it replaces (the help text and README list these)
ENCODER_PATHS: Dict[str, str] = {
    "unmasked-attention": "attention without a padding mask when a batch pads nothing (hubert.fast_paths)",
    "padding-known-on-host": "whether a batch pads anything comes from the host, not a read of the GPU",
    "direct-attention": "self-attention by one scaled_dot_product_attention call, without PyTorch's "
    "general multi_head_attention_forward",
    "no-cudnn-attention": "scaled-dot-product attention without cuDNN's kernel, inside the model's forward",
    "fft-positional-conv": "the positional convolution by FFT",
    "fast-fft-sizes": "its FFTs of sizes with prime factors up to 7 (with fft-positional-conv)",
    "gelu-in-input-dtype": "PyTorch's GELU in bf16/fp16 instead of fairseq's float32 copies",
    "device-time-masks": "time masks drawn on the device for the whole batch (hubert.time_masks)",
    "matmul-label-logits": "masked-prediction logits by one matrix product (pretraining only)",
}
TRAINING_PATHS: Dict[str, str] = {
    "background-checkpoints": "checkpoints written on a thread while training goes on (tasks.checkpoint_writes)",
    "loader-worker-exit": "kept loader workers ended at once when training ends, on torch releases that "
    "wait 5 s per worker (tasks.loader_workers)",
    "step-bookkeeping": "cheaper per-step seeding and train-mode switch (tasks.step_bookkeeping)",
    "dummy-batch-from-step": "no second read of the first batch before each epoch in one-process runs "
    "(tasks.dummy_batches)",
    "fused-adamw": "optimizer adamw by PyTorch's fused AdamW and one foreach norm for clipping (optim.adamw)",
    "foreach-master-weights": "bf16/fp16 master-weight copies by foreach operations (optim.master_weights)",
}
# Not in ``all``: each changes rounding or process-wide GPU settings, or is unmeasured.
OPT_IN_PATHS: Dict[str, str] = {
    "compiled-layers": "torch.compile of each transformer layer (rounds differently; compiles first)",
    "cudnn-benchmark": "cuDNN times its convolution algorithms per shape (training process only)",
    "expandable-segments": "the CUDA allocator grows segments instead of new blocks (training process only)",
}
KNOWN: Dict[str, str] = {**ENCODER_PATHS, **TRAINING_PATHS, **OPT_IN_PATHS}
DEFAULT: FrozenSet[str] = frozenset(ENCODER_PATHS) | frozenset(TRAINING_PATHS)

HELP = (
    "faster ways through fairseq: 'all' (default), 'none' (stock fairseq code), or names joined by "
    "',' or '+', '-NAME' to leave one out of 'all'. Names: " + ", ".join(DEFAULT)
    + "; not in 'all': " + ", ".join(OPT_IN_PATHS)
)


def parse_fast_paths(value: str) -> FrozenSet[str]:
    """The set of names ``value`` turns on; ``ValueError`` naming what is unknown."""
    chosen = set()
    for item in value.replace("+", ",").split(","):
        item = item.strip()
        if item in ("", "none"):
            continue
        if item == "all":
            chosen |= DEFAULT
        elif item.startswith("-") and item[1:] in KNOWN:
            chosen.discard(item[1:])
        elif item in KNOWN:
            chosen.add(item)
        else:
            raise ValueError(f"unknown name {item!r} in {value!r}; known: all, none, "
                             + ", ".join(KNOWN))
    return frozenset(chosen)
