#!/usr/bin/env python3
"""Evaluate a fine-tuned emotion classifier on TSV_DIR/{SPLIT}.tsv with labels {SPLIT}.emo:
every utterance at full length. Writes predictions.tsv (utterance, true, predicted, class
probabilities), results.json (ua, wa, per_class_recall, macro_f1, confusion, labels, n),
confusion.txt and confusion.png to --out-dir (default: eval_SPLIT next to the checkpoint).

With --spans SPANS.json (SpeechBrain ZED format: {utt_id: {"wav", "duration", "emotion":
[{"emo", "start", "end"}]}}, matched to the split by wav file name) results.json also gets
eder, frame_accuracy, attention_in_span and uniform_in_span, and segments.json the predicted
segments of each utterance with its scores."""

import argparse

from fairseq_flea.io.atomic_files import check_output_directory
from fairseq_flea.io.errors import log_tool_progress, run_tool
from fairseq_flea.evaluation.evaluate import evaluate_split, format_frame_scores
from fairseq_flea.inference.segments import add_segment_arguments, segment_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("ckpt", help="fine-tuned ser_attention_classification checkpoint (or its inference conversion)")
    parser.add_argument("tsv_dir")
    parser.add_argument("split")
    parser.add_argument("--out-dir")
    parser.add_argument("--labels", default="emo", help="extension of the label file (default emo)")
    parser.add_argument("--batch-seconds", type=float, default=100.0)
    parser.add_argument("--spans", metavar="SPANS_JSON", help="ZED-style reference spans: frame-level scores")
    parser.add_argument("--spans-of-other-utterances", action="store_true",
                        help="allow entries for utterances not in the split (a spans file for the whole corpus)")
    add_segment_arguments(parser)
    args = parser.parse_args()
    options = segment_options(args)
    if args.out_dir:
        check_output_directory(args.out_dir)
    log_tool_progress()
    results = evaluate_split(args.ckpt, args.tsv_dir, args.split, args.out_dir, args.labels, args.batch_seconds,
                             args.spans, options, args.neutral_label, args.spans_of_other_utterances)
    recalls = ", ".join(f"{label} {100 * r:.1f}" if r is not None else f"{label} -"
                        for label, r in zip(results["labels"], results["per_class_recall"]))
    print(f"{args.split}: UA {100 * results['ua']:.2f}  WA {100 * results['wa']:.2f}  "
          f"macro-F1 {100 * results['macro_f1']:.2f}  n={results['n']}  recall: {recalls}")
    if args.spans:
        print(f"{args.split}: {format_frame_scores(results)}")


if __name__ == "__main__":
    run_tool(main)
