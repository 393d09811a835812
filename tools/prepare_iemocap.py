#!/usr/bin/env python3
"""FLEA phase 0 on IEMOCAP: fairseq manifests and utterance labels for five leakage-free folds.

    python tools/prepare_iemocap.py IEMOCAP_ROOT OUT_DIR [--pretrain-splits]

Fold k holds Session k out: one of its speakers validates (--valid-speaker, default F), the
other is test; the other four sessions train. Writes OUT_DIR/all.*, OUT_DIR/fold{1..5}/
{train,valid,test}.{tsv,emo,spk} + dict.emo.txt, OUT_DIR/counts.json, and with
--pretrain-splits OUT_DIR/fold{k}/pretrain/{train,valid}.{tsv,spk} (see manifests/README.md).
"""

import argparse

from fairseq_flea.io.atomic_files import check_output_directory
from fairseq_flea.corpus.folds import add_pretrain_split_options, pretrain_valid_fraction
from fairseq_flea.io.errors import log_tool_progress, run_tool
from fairseq_flea.corpus.iemocap import CLASS_MAPS, prepare_iemocap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("iemocap_root", help="the directory holding Session1 ... Session5")
    parser.add_argument("out_dir", help="where the manifests go, e.g. manifests/generated/iemocap")
    parser.add_argument(
        "--classes",
        default="4",
        help=f"a preset ({', '.join(f'{name}: {CLASS_MAPS[name]}' for name in CLASS_MAPS)}) "
        "or label[=class],... e.g. ang,hap,exc=hap,neu,sad (default: 4)",
    )
    parser.add_argument(
        "--valid-speaker", choices=["F", "M"], default="F",
        help="the held-out session's speaker that validates; the other is test (default: F)",
    )
    add_pretrain_split_options(parser, "training sessions")
    args = parser.parse_args()
    check_output_directory(args.out_dir)
    fraction = pretrain_valid_fraction(args, parser)
    log_tool_progress()
    prepare_iemocap(
        args.iemocap_root,
        args.out_dir,
        class_map_spec=args.classes,
        valid_gender=args.valid_speaker,
        pretrain_valid_fraction=fraction,
        seed=args.seed,
    )


if __name__ == "__main__":
    run_tool(main)
