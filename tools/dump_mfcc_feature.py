#!/usr/bin/env python3
"""Dump 39-dim MFCC + delta + delta-delta features (100 frames/s) for one shard of a manifest,
as fairseq's examples/hubert/simple_kmeans/dump_mfcc_feature.py does, without torchaudio:
FEAT_DIR/{split}_{rank}_{nshard}.npy and .len. HuBERT iteration-1 labels use label_rate 100."""

import argparse

from fairseq_flea.io.atomic_files import check_output_directory
from fairseq_flea.io.errors import log_tool_progress, run_tool
from fairseq_flea.units.mfcc import dump_mfcc_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tsv_dir", help="directory holding {split}.tsv")
    parser.add_argument("split")
    parser.add_argument("nshard", type=int)
    parser.add_argument("rank", type=int, help="0-based shard index")
    parser.add_argument("feat_dir")
    parser.add_argument("--sample_rate", "--sample-rate", type=int, default=16000)
    args = parser.parse_args()
    check_output_directory(args.feat_dir)
    log_tool_progress()
    dump_mfcc_features(args.tsv_dir, args.split, args.nshard, args.rank, args.feat_dir, args.sample_rate)


if __name__ == "__main__":
    run_tool(main)
