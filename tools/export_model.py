#!/usr/bin/env python3
"""Export a fine-tuned FLEA classifier (checkpoint_best.pt, or its inference conversion) for use
outside fairseq.

    python tools/export_model.py huggingface CKPT OUT_DIR

writes a directory that transformers loads offline (config.json with the classes,
model.safetensors, preprocessor_config.json, modeling_flea_hubert.py, a README model card):
AutoModelForAudioClassification.from_pretrained(OUT_DIR, trust_remote_code=True) or
pipeline("audio-classification", model=OUT_DIR, trust_remote_code=True).

A checkpoint that is not a classifier, or an output that exists, is one error line (exit 1).
"""

import argparse
import logging
import shlex
import sys

from fairseq_flea.io.errors import run_tool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    formats = parser.add_subparsers(dest="format", required=True)
    huggingface = formats.add_parser("huggingface", help="a transformers directory (trust_remote_code)")
    huggingface.add_argument("checkpoint", help="fine-tuned ser_attention_classification checkpoint")
    huggingface.add_argument("output_dir", help="new directory to write")
    args = parser.parse_args()
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, stream=sys.stderr, force=True)
    command = " ".join(shlex.quote(part) for part in ["python", "tools/export_model.py", *sys.argv[1:]])
    if args.format == "huggingface":
        from fairseq_flea.export.huggingface import export_huggingface

        kind = export_huggingface(args.checkpoint, args.output_dir, command=command)
        print(f"wrote {args.output_dir} ({'transformers HubertForSequenceClassification' if kind == 'stock' else 'modeling_flea_hubert.py, trust_remote_code=True'})")


if __name__ == "__main__":
    run_tool(main)
