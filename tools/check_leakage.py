#!/usr/bin/env python3
"""The leakage guard: run it before every pretraining, k-means and fine-tuning step of a fold.

    python tools/check_leakage.py TRAIN_TSV [TRAIN_TSV ...] --fold-dir OUT_DIR/fold1
    python tools/check_leakage.py TRAIN_TSV [...] --held-out VALID_TSV TEST_TSV [--iemocap-names]

Exits 1 with one line naming the manifest, the leaked utterance or speaker and the held-out
split when a training manifest holds an utterance (same resolved audio file) or a speaker of
the held-out manifests (by default the fold's valid.tsv and test.tsv). Speakers come from the
{split}.spk file beside each manifest, or with --iemocap-names from IEMOCAP file names.
"""

import argparse

from fairseq_flea.io.errors import log_tool_progress, run_tool
from fairseq_flea.corpus.iemocap import iemocap_speaker
from fairseq_flea.corpus.leakage import check_no_leakage, fold_held_out_manifests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("training_manifests", nargs="+", help="the manifests the step trains on")
    held_out = parser.add_mutually_exclusive_group(required=True)
    held_out.add_argument("--fold-dir", help="a fold directory; its valid.tsv and test.tsv are held out")
    held_out.add_argument("--held-out", nargs="+", metavar="TSV", help="the held-out manifests")
    parser.add_argument(
        "--iemocap-names", action="store_true",
        help="take speakers from IEMOCAP file names (Ses01F_impro01_M003 -> Ses01M), not .spk files",
    )
    args = parser.parse_args()
    log_tool_progress()
    check_no_leakage(
        args.training_manifests,
        args.held_out or fold_held_out_manifests(args.fold_dir),
        speaker_of=iemocap_speaker if args.iemocap_names else None,
    )


if __name__ == "__main__":
    run_tool(main)
