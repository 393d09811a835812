#!/usr/bin/env python3
"""Dump transformer layer LAYER (1-based) of a HuBERT checkpoint for one shard of a manifest,
in the format of fairseq's examples/hubert/simple_kmeans/dump_hubert_feature.py:
FEAT_DIR/{split}_{rank}_{nshard}.npy and .len. Runs on the GPU when there is one."""

import argparse

from fairseq_flea.io.atomic_files import check_output_directory
from fairseq_flea.io.errors import log_tool_progress, run_tool
from fairseq_flea.units.layer_features import dump_layer_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tsv_dir", help="directory holding {split}.tsv")
    parser.add_argument("split")
    parser.add_argument("ckpt_path", help="HuBERT pretraining checkpoint (fairseq's or ours)")
    parser.add_argument("layer", type=int, help="transformer layer, 1-based")
    parser.add_argument("nshard", type=int)
    parser.add_argument("rank", type=int, help="0-based shard index")
    parser.add_argument("feat_dir")
    parser.add_argument("--max_chunk", "--max-chunk", type=int, default=1_600_000,
                        help="longer audio is cut into pieces of this many samples (official default)")
    parser.add_argument("--batch-seconds", type=float, default=None,
                        help="padded seconds of audio per batch; 0 extracts one utterance at a time "
                             "(default: 100 on a GPU, 0 on a CPU, where batches measured slower)")
    args = parser.parse_args()
    check_output_directory(args.feat_dir)
    log_tool_progress()
    dump_layer_features(
        args.tsv_dir, args.split, args.ckpt_path, args.layer, args.nshard, args.rank,
        args.feat_dir, max_chunk=args.max_chunk, batch_seconds=args.batch_seconds,
    )


if __name__ == "__main__":
    run_tool(main)
