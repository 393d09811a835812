#!/usr/bin/env python3
"""Aggregate a recipe's per-fold evaluations (WORK_DIR/fold*/.../eval_test/results.json) into
WORK_DIR/results.md: mean ± std over folds for the TAPT baseline and each (layer, K,
pooling), laid out like the paper's Table 1 with the paper's numbers beside ours."""

import argparse

from fairseq_flea.io.errors import run_tool
from fairseq_flea.evaluation.results_table import write_results_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("work_dir")
    print(write_results_table(parser.parse_args().work_dir), end="")


if __name__ == "__main__":
    run_tool(main)
