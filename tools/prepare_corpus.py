#!/usr/bin/env python3
"""FLEA phase 0 on any labelled corpus: fairseq manifests and utterance labels per fold.

    python tools/prepare_corpus.py CSV OUT_DIR [--folds N] [--pretrain-splits]

CSV rows are path,label,speaker[,group] (an optional header row names these columns;
relative paths are relative to the CSV). With a group column each fold leaves one group
out; without it the sorted speakers are dealt into --folds speaker sets (default 5) and
each fold leaves one set out. The held-out speakers, sorted, split in two: the first half
validates, the rest is test. Same layout and checks as tools/prepare_iemocap.py.
"""

import argparse

from fairseq_flea.io.atomic_files import check_output_directory
from fairseq_flea.corpus.csv_corpus import prepare_corpus
from fairseq_flea.corpus.folds import add_pretrain_split_options, pretrain_valid_fraction
from fairseq_flea.io.errors import log_tool_progress, run_tool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="path,label,speaker[,group] per row")
    parser.add_argument("out_dir", help="where the manifests go, e.g. manifests/generated/mycorpus")
    parser.add_argument(
        "--folds", type=int, default=None,
        help="number of speaker-set folds when the CSV has no group column (default: 5)",
    )
    parser.add_argument(
        "--swap-valid-test", action="store_true",
        help="validate on the second half of the held-out speakers, test on the first",
    )
    add_pretrain_split_options(parser, "training groups")
    args = parser.parse_args()
    check_output_directory(args.out_dir)
    fraction = pretrain_valid_fraction(args, parser)
    log_tool_progress()
    prepare_corpus(
        args.csv,
        args.out_dir,
        num_folds=args.folds,
        swap_valid_test=args.swap_valid_test,
        pretrain_valid_fraction=fraction,
        seed=args.seed,
    )


if __name__ == "__main__":
    run_tool(main)
