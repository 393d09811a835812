#!/usr/bin/env python3
"""Merge the label shards LAB_DIR/{split}_{rank}_{nshard}.km into LAB_DIR/{split}.{name} and
write LAB_DIR/dict.{name}.txt (one line per cluster of KM_PATH): the files continued
pretraining reads (task.label_dir=LAB_DIR task.labels='["{name}"]')."""

import argparse

from fairseq_flea.io.atomic_files import check_output_directory
from fairseq_flea.io.errors import log_tool_progress, run_tool
from fairseq_flea.units.kmeans import merge_km_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lab_dir")
    parser.add_argument("split")
    parser.add_argument("nshard", type=int)
    parser.add_argument("km_path", help="the k-means model the labels came from (gives the cluster count)")
    parser.add_argument("--name", default="km", help="label name: the file extension (default km)")
    args = parser.parse_args()
    check_output_directory(args.lab_dir)
    log_tool_progress()
    merge_km_labels(args.lab_dir, args.split, args.nshard, args.km_path, args.name)


if __name__ == "__main__":
    run_tool(main)
