#!/usr/bin/env python3
"""Label every frame of one feature shard with its nearest k-means centre, as fairseq's
examples/hubert/simple_kmeans/dump_km_label.py does: LAB_DIR/{split}_{rank}_{nshard}.km.
KM_PATH may come from our learn_kmeans.py (either backend) or from fairseq's."""

import argparse

from fairseq_flea.io.atomic_files import check_output_directory
from fairseq_flea.io.errors import log_tool_progress, run_tool
from fairseq_flea.units.kmeans import dump_km_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("feat_dir")
    parser.add_argument("split")
    parser.add_argument("km_path")
    parser.add_argument("nshard", type=int)
    parser.add_argument("rank", type=int, help="0-based shard index")
    parser.add_argument("lab_dir")
    args = parser.parse_args()
    check_output_directory(args.lab_dir)
    log_tool_progress()
    dump_km_labels(args.feat_dir, args.split, args.km_path, args.nshard, args.rank, args.lab_dir)


if __name__ == "__main__":
    run_tool(main)
