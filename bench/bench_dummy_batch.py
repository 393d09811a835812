#!/usr/bin/env python3
"""The read fairseq's trainer makes before every epoch and every validation: it collates the
first batch again in the training process (``EpochBatchIterator.first_batch``) as a stand-in
for a rank's empty batches, while the GPU waits. Timed for the base configs on generated
audio with IEMOCAP-like lengths, as fairseq does it (``task.read_dummy_batch=true``) and as
a run of one process now does it (fairseq_flea.tasks.dummy_batches), median of N.

    python bench/bench_dummy_batch.py
"""

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench_train_throughput import write_corpus  # noqa: E402
from fairseq import tasks  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import fairseq_flea  # noqa: E402, F401

CONFIGS = {"pretraining": REPO_ROOT / "config" / "pretrain" / "tapt_base.yaml",
           "finetuning": REPO_ROOT / "config" / "finetune" / "ser_attention_base.yaml"}


def first_batch_milliseconds(config: Path, data: Path, split: str, read_dummy_batch: bool, repeats: int) -> float:
    cfg = OmegaConf.load(config)
    cfg.task.data, cfg.task.read_dummy_batch = str(data), read_dummy_batch
    if "label_dir" in cfg.task:
        cfg.task.label_dir, cfg.task.init_from = str(data), None
    task = tasks.setup_task(cfg.task)
    task.load_dataset(split)
    iterator = task.get_batch_iterator(task.dataset(split), max_tokens=cfg.dataset.max_tokens,
                                       max_sentences=cfg.dataset.get("batch_size"), num_workers=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        iterator.first_batch  # what Trainer.get_train_iterator and get_valid_iterator ask for
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=300, help="generated training utterances (default: 300)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as work:
        write_corpus(Path(work), args.utterances)
        print(f"# ms the training process spends on the first batch before each epoch and validation, "
              f"median of {args.repeats}, {args.utterances} generated utterances")
        print("| phase | split | fairseq (read again) | one process (first step's batch) | saved |")
        print("|---|---|---|---|---|")
        for phase, config in CONFIGS.items():
            for split in ("train", "valid"):
                fairseqs, ours = (first_batch_milliseconds(config, Path(work), split, read, args.repeats)
                                  for read in (True, False))
                print(f"| {phase} | {split} | {fairseqs:.1f} | {ours:.2f} | {fairseqs - ours:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
