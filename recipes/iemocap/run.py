#!/usr/bin/env python3
"""FLEA on IEMOCAP (or any CSV corpus), all folds, stages 0-5; see fairseq_flea/recipe/flea_recipe.py.

    python recipes/iemocap/run.py --iemocap IEMOCAP_full_release --work-dir exp/iemocap \
        --hubert hubert_base_ls960.pt --hubert-kmeans hubert_base_ls960_L9_km500.bin

Re-running skips finished steps; --stage/--stop-stage select stages; --dry-run prints the
graph of steps and what would run; the Table-1-style results land in WORK_DIR/results.md.

Launchers: --launcher local (default) runs independent steps side by side, one per free GPU
(--devices, --gpus-per-step) or CPU slot (--cpu-jobs); --launcher slurm submits every step
as a SLURM job (submitit) with afterok dependencies (--slurm-* options or --slurm-config
YAML) and waits for them.
"""

import argparse
import os
import shlex

from fairseq_flea.io.errors import log_tool_progress, run_tool
from fairseq_flea.recipe.flea_recipe import PRECISION_OVERRIDES, FleaRecipe, RecipeConfig
from fairseq_flea.recipe.launchers import LAUNCHERS, add_launcher_options, build_launcher
from fairseq_flea.units.kmeans import DEFAULT_KMEANS_BACKEND, KMEANS_BACKENDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    corpus = parser.add_mutually_exclusive_group(required=True)
    corpus.add_argument("--iemocap", help="IEMOCAP root (holding Session1..5)")
    corpus.add_argument("--corpus-csv", help="any corpus as CSV: path,label,speaker[,group]")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--hubert", required=True, help="released HuBERT checkpoint (TAPT starts here)")
    parser.add_argument("--hubert-kmeans", required=True, help="its k-means model (TAPT labels)")
    parser.add_argument("--tapt-label-layer", type=int, default=9)
    parser.add_argument("--stage", type=int, default=0)
    parser.add_argument("--stop-stage", type=int, default=5)
    parser.add_argument("--folds", type=int, nargs="+", help="default: all")
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 9, 11])
    parser.add_argument("--clusters", type=int, nargs="+", default=[50, 100, 150])
    parser.add_argument("--directions", nargs="+", choices=["FM", "MF"], default=["FM", "MF"],
                        help="which held-out speaker validates: FM, the female (tests the male), MF the reverse")
    parser.add_argument("--seeds", type=int, nargs="+", help="repeat every fine-tuning with each seed")
    parser.add_argument("--poolings", nargs="+", choices=["mean", "attention"], default=["mean", "attention"])
    parser.add_argument("--kmeans-backend", choices=sorted(KMEANS_BACKENDS), default=DEFAULT_KMEANS_BACKEND,
                        help=f"tools/learn_kmeans.py's --backend (default: {DEFAULT_KMEANS_BACKEND})")
    parser.add_argument("--tapt-config", default="tapt_base")
    parser.add_argument("--cpt-config", default="flea_cpt_base")
    parser.add_argument("--mean-config", default="ser_mean_base")
    parser.add_argument("--attention-config", default="ser_attention_base")
    parser.add_argument("--precision", choices=sorted(PRECISION_OVERRIDES),
                        help="default: the configs' own (bf16 in the base configs); fp16 on GPUs without "
                             "bf16 (V100, T4), fp32 or bf16 on CPUs")
    parser.add_argument("--gpus-per-step", type=int, default=1, help="GPUs of each training step (fairseq's DDP)")
    parser.add_argument("--spans", help="ZED-style reference spans of the corpus (JSON): evaluation adds EDER and "
                        "attention in span, results.md their columns")
    parser.add_argument("--dry-run", action="store_true", help="print the steps, what is done and what would run")
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="local")
    add_launcher_options(parser)
    parser.add_argument("--overrides", default="", help="extra fairseq-hydra-train overrides for every training step")
    parser.add_argument("--pretrain-overrides", default="", help="... for TAPT and CPT only")
    parser.add_argument("--finetune-overrides", default="", help="... for fine-tuning only")
    args = parser.parse_args()
    log_tool_progress()
    overrides = [*PRECISION_OVERRIDES.get(args.precision, []), *shlex.split(args.overrides)]
    recipe = FleaRecipe(RecipeConfig(
        work_dir=args.work_dir, hubert_checkpoint=args.hubert, hubert_kmeans=args.hubert_kmeans,
        corpus_root=args.iemocap, corpus_csv=args.corpus_csv, folds=args.folds, layers=args.layers,
        clusters=args.clusters, poolings=args.poolings, tapt_label_layer=args.tapt_label_layer,
        kmeans_backend=args.kmeans_backend, tapt_config=args.tapt_config, cpt_config=args.cpt_config,
        finetune_configs={"mean": args.mean_config, "attention": args.attention_config},
        overrides=overrides, pretrain_overrides=shlex.split(args.pretrain_overrides),
        finetune_overrides=shlex.split(args.finetune_overrides), stage=args.stage, stop_stage=args.stop_stage,
        directions=args.directions, seeds=args.seeds, gpus_per_step=args.gpus_per_step,
        spans=None if args.spans is None else os.path.abspath(args.spans),
    ))
    recipe.run(None if args.dry_run else build_launcher(args.launcher, recipe.work, args), dry_run=args.dry_run)


if __name__ == "__main__":
    run_tool(main)
