#!/usr/bin/env python3
"""Aggregate a recipe's per-fold evaluations (WORK_DIR/fold*/.../eval_test/results.json) into
WORK_DIR/results.md: mean ± std over folds for the TAPT baseline and each (layer, K,
pooling), laid out like the paper's Table 1 with the paper's numbers beside ours.

A damaged results.json (cut off mid-write, a score missing) stops it with one line naming
the file; --skip-damaged leaves such files out with a warning each, counted in the footer."""

import argparse
import logging
import sys

from fairseq_flea.io.errors import run_tool
from fairseq_flea.evaluation.results_table import write_results_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work_dir")
    parser.add_argument("--skip-damaged", action="store_true",
                        help="leave out a damaged results.json (warning on stderr, counted in the table's footer)")
    args = parser.parse_args()
    # stdout is the table: warnings go to stderr.
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING, stream=sys.stderr)
    print(write_results_table(args.work_dir, skip_damaged=args.skip_damaged), end="")


if __name__ == "__main__":
    run_tool(main)
