#!/usr/bin/env python3
"""Convert checkpoints between FLEA's phases (outputs carry no optimizer state):

  encoder     HuBERT pretraining checkpoint -> encoder-only starting point (no label
              embeddings), for task.init_from, model.w2v_path and dump_feature.py
  huggingface HuggingFace HubertModel directory (config.json + model.safetensors or
              pytorch_model.bin, as facebook/hubert-base-ls960 ships) -> fairseq HuBERT checkpoint
  inference   fine-tuned ser_attention_classification checkpoint -> small inference checkpoint
              (weights, label dictionary, config)

    python tools/convert_checkpoint.py encoder exp/cpt/checkpoint_last.pt exp/cpt/encoder.pt
"""

import argparse

from fairseq_flea.io.atomic_files import check_output_paths
from fairseq_flea.hubert.conversion import huggingface_to_fairseq, pretraining_to_encoder
from fairseq_flea.inference.conversion import classifier_to_inference
from fairseq_flea.io.errors import log_tool_progress, run_tool

CONVERSIONS = {
    "encoder": pretraining_to_encoder,
    "huggingface": huggingface_to_fairseq,
    "inference": classifier_to_inference,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("conversion", choices=sorted(CONVERSIONS))
    parser.add_argument("source", help="checkpoint file (encoder, inference) or directory (huggingface)")
    parser.add_argument("output", help="the fairseq checkpoint to write")
    args = parser.parse_args()
    check_output_paths(args.output)
    log_tool_progress()
    CONVERSIONS[args.conversion](args.source, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_tool(main)
