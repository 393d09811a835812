#!/usr/bin/env python3
"""Multi-process fairseq training on CPU (gloo). On GPUs use fairseq's own
distributed_training.distributed_world_size=N instead.

    python tools/train_cpu_distributed.py 2 --config-dir config/pretrain \
        --config-name hubert_tiny task.data=... task.label_dir=... checkpoint.save_dir=...
"""

import argparse
import sys

from fairseq_flea.launch.cpu_distributed import launch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("world_size", type=int, help="number of CPU processes")
    parser.add_argument("hydra_train_args", nargs=argparse.REMAINDER, help="fairseq-hydra-train arguments")
    args = parser.parse_args()
    if args.world_size < 1:
        parser.error("world_size must be at least 1")
    sys.exit(launch(args.world_size, args.hydra_train_args))


if __name__ == "__main__":
    main()
