#!/usr/bin/env python3
"""FLEA phase 0 on IEMOCAP: fairseq manifests and utterance labels for five leakage-free folds.

    python tools/prepare_iemocap.py IEMOCAP_ROOT OUT_DIR [--pretrain-splits]

Fold k holds Session k out: one of its speakers validates (--valid-speaker, default F), the
other is test; the other four sessions train. Writes OUT_DIR/all.*, OUT_DIR/fold{1..5}/
{train,valid,test}.{tsv,emo,spk} + dict.emo.txt, OUT_DIR/counts.json, and with
--pretrain-splits OUT_DIR/fold{k}/pretrain/{train,valid}.{tsv,spk} (see manifests/README.md).
"""

import argparse

from fairseq_flea.errors import log_tool_progress, run_tool
from fairseq_flea.iemocap import CLASS_MAPS, prepare_iemocap


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
    parser.add_argument(
        "--pretrain-splits", action="store_true",
        help="also write fold{k}/pretrain/{train,valid}.tsv from the training sessions only",
    )
    parser.add_argument(
        "--pretrain-valid-percent", type=float, default=5.0,
        help="share of the training sessions' utterances in pretrain/valid.tsv (default: 5)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the pretrain/valid draw (default: 0)")
    args = parser.parse_args()
    if not 0 < args.pretrain_valid_percent < 100:
        parser.error("--pretrain-valid-percent must be between 0 and 100")
    log_tool_progress()
    prepare_iemocap(
        args.iemocap_root,
        args.out_dir,
        class_map_spec=args.classes,
        valid_gender=args.valid_speaker,
        pretrain_valid_fraction=args.pretrain_valid_percent / 100 if args.pretrain_splits else None,
        seed=args.seed,
    )


if __name__ == "__main__":
    run_tool(main)
