#!/usr/bin/env python3
"""Recognise emotion in audio files with a fine-tuned classifier (checkpoint_best.pt or its
`convert_checkpoint.py inference` form), or a model.onnx from `tools/export_model.py onnx`
(run on onnxruntime with numpy alone: torch and fairseq are not imported; no --clusters).

Prints a table (file, predicted class, probability of each class, emotion segments, notes)
on stdout. The segments come from the per-frame logits (median filter, minimum segment
length, optionally one non-neutral span per file) and tile each file. Any
format soundfile reads works: other sample rates are resampled to the model's, several
channels averaged, and the notes column says so. A file that cannot be used (missing, not
audio, shorter than one 20 ms frame) is reported on stderr as `skipped FILE: reason` and
the others are processed. Exit status 0 when at least one file was predicted, 1 when none
was or the checkpoint is not an emotion classifier.

    python tools/predict.py exp/flea/checkpoint_best.pt rec1.wav rec2.flac --plot plots/
    python tools/predict.py CKPT *.wav --json - --clusters km100.bin --cluster-layer 9
    python tools/predict.py CKPT *.wav --plot plots/ --spans test_spans.json --single-span
"""

import argparse
import logging
import sys

from fairseq_flea.io.atomic_files import check_output_directory, check_output_paths
from fairseq_flea.io.errors import run_tool
from fairseq_flea.inference.report import PredictionOutputs, predict_to_outputs
from fairseq_flea.inference.segments import add_segment_arguments, segment_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="fine-tuned ser_attention_classification checkpoint, or an exported .onnx model")
    parser.add_argument("files", nargs="+", help="audio files")
    parser.add_argument("--json", metavar="PATH", help="write predictions with per-frame weights as JSON ('-': stdout, no table)")
    parser.add_argument("--csv", metavar="PATH", help="write the table as CSV ('-': stdout, no table)")
    parser.add_argument("--plot", metavar="DIR", help="write a PNG per file: waveform, attention over time, prediction")
    parser.add_argument("--clusters", metavar="KM_PATH", help="k-means model of one encoder layer: per-frame cluster ids")
    parser.add_argument("--cluster-layer", type=int, metavar="N", help="the layer (1-based) the k-means model was learnt on")
    parser.add_argument("--batch-seconds", type=float, default=100.0, help="padded seconds of audio per batch (0: one file at a time)")
    parser.add_argument("--spans", metavar="SPANS_JSON", help="ZED-style reference spans: shaded in the plots of the files they name")
    add_segment_arguments(parser)
    args = parser.parse_args()
    check_output_paths(*[path for path in (args.json, args.csv) if path not in (None, "-")])
    if args.plot:
        check_output_directory(args.plot)
    # stdout carries the results (possibly JSON or CSV); fairseq's loading messages stay off it.
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, stream=sys.stderr, force=True)
    predict_to_outputs(
        args.checkpoint,
        args.files,
        PredictionOutputs(json_path=args.json, csv_path=args.csv, plot_dir=args.plot, segments=segment_options(args),
                          neutral_label=args.neutral_label, spans_path=args.spans),
        km_path=args.clusters,
        cluster_layer=args.cluster_layer,
        batch_seconds=args.batch_seconds,
    )


if __name__ == "__main__":
    run_tool(main)
