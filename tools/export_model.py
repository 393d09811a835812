#!/usr/bin/env python3
"""Export a fine-tuned FLEA classifier (checkpoint_best.pt, or its inference conversion) for use
outside fairseq.

    python tools/export_model.py huggingface CKPT OUT_DIR

writes a directory that transformers loads offline (config.json with the classes,
model.safetensors, preprocessor_config.json, modeling_flea_hubert.py, a README model card):
AutoModelForAudioClassification.from_pretrained(OUT_DIR, trust_remote_code=True) or
pipeline("audio-classification", model=OUT_DIR, trust_remote_code=True).

    python tools/export_model.py onnx CKPT OUT.onnx [--int8] [--audio FILES...]

writes one ONNX graph (inputs waveform, lengths; outputs logits, frame_weights, frame_logits;
dynamic batch and time; opset 18) after onnxruntime has run it against fairseq on held-out
audio (generated, or --audio files): the largest probability difference is printed and above
1e-4 nothing is written. --int8 adds OUT.int8.onnx (dynamic quantisation), kept only if 99 %
of the argmaxes agree and no probability moves by more than 0.02 (both printed).

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
    onnx = formats.add_parser("onnx", help="an ONNX graph, verified with onnxruntime against fairseq")
    onnx.add_argument("checkpoint", help="fine-tuned ser_attention_classification checkpoint")
    onnx.add_argument("output", help="new .onnx file to write")
    onnx.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx, dynamically quantised (if it agrees)")
    onnx.add_argument("--audio", nargs="+", metavar="FILE", default=[], help="verify on these files instead of generated audio")
    args = parser.parse_args()
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, stream=sys.stderr, force=True)
    command = " ".join(shlex.quote(part) for part in ["python", "tools/export_model.py", *sys.argv[1:]])
    if args.format == "huggingface":
        from fairseq_flea.export.huggingface import export_huggingface

        kind = export_huggingface(args.checkpoint, args.output_dir, command=command)
        print(f"wrote {args.output_dir} ({'transformers HubertForSequenceClassification' if kind == 'stock' else 'modeling_flea_hubert.py, trust_remote_code=True'})")
    else:
        from fairseq_flea.export.onnx_export import export_onnx
        from fairseq_flea.hubert.checkpoints import load_checkpoint_state
        from fairseq_flea.io.audio import read_audio_for_model

        audio = []
        if args.audio:
            sample_rate = int(load_checkpoint_state(args.checkpoint)["cfg"]["task"].get("sample_rate", 16000))
            audio = [read_audio_for_model(path, sample_rate)[0] for path in args.audio]
        export_onnx(args.checkpoint, args.output, int8=args.int8, verify_audio=audio)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    run_tool(main)
