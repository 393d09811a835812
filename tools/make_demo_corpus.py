#!/usr/bin/env python3
"""Generate the demo's toy emotion corpus (not IEMOCAP): speech-like wavs in four classes.

    python tools/make_demo_corpus.py OUT_DIR [--seed 0] [--utterances-per-speaker 48]

Writes OUT_DIR/wav/<speaker>/*.wav, OUT_DIR/metadata.csv (label, speaker, session, split,
emotional span, duration, sentence), OUT_DIR/corpus.csv (path,label,speaker,group for
tools/prepare_corpus.py), OUT_DIR/spans.json (the emotional spans in SpeechBrain's ZED
format, for tools/evaluate.py --spans) and the demo split's manifests in OUT_DIR/manifests.
The same seed writes the same bytes.
"""

import argparse

from fairseq_flea.io.atomic_files import check_output_directory
from fairseq_flea.corpus.demo_corpus import (
    DEFAULT_PARTIAL_FRACTION,
    DEFAULT_UTTERANCES_PER_SPEAKER,
    format_split_counts,
    write_demo_corpus,
)
from fairseq_flea.io.errors import run_tool


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", help="where the corpus goes, e.g. manifests/generated/demo_corpus")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--utterances-per-speaker", type=int, default=DEFAULT_UTTERANCES_PER_SPEAKER,
        help=f"per speaker, 8 speakers, classes in turn (default: {DEFAULT_UTTERANCES_PER_SPEAKER})",
    )
    parser.add_argument(
        "--partial-fraction", type=float, default=DEFAULT_PARTIAL_FRACTION,
        help="share of the ang/hap/sad utterances with the emotion in a part only "
        f"(default: {DEFAULT_PARTIAL_FRACTION})",
    )
    args = parser.parse_args()
    check_output_directory(args.out_dir)
    utterances = write_demo_corpus(
        args.out_dir,
        seed=args.seed,
        utterances_per_speaker=args.utterances_per_speaker,
        partial_fraction=args.partial_fraction,
    )
    print(f"wrote {len(utterances)} utterances under {args.out_dir}:")
    print(format_split_counts(utterances))


if __name__ == "__main__":
    run_tool(main)
