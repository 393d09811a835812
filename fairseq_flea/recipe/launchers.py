"""Choosing a launcher from the command line: ``local`` (this machine) or ``slurm``."""

import argparse
import os
from typing import Union

from fairseq_flea.recipe.local_launcher import LocalLauncher, visible_devices
from fairseq_flea.recipe.slurm_launcher import (DEFAULT_CPUS_PER_TASK, DEFAULT_OTHER_MINUTES, DEFAULT_TRAIN_MINUTES,
                                                SlurmConfig, SlurmLauncher)

LAUNCHERS = ("local", "slurm")


def add_launcher_options(parser: argparse.ArgumentParser) -> None:
    local = parser.add_argument_group("--launcher local")
    local.add_argument("--devices", help="comma-separated GPU ids to share among steps "
                                         "(default: CUDA_VISIBLE_DEVICES, else every GPU; '' for none)")
    local.add_argument("--cpu-jobs", type=int, default=1,
                       help="steps run side by side on CPU (every step when there is no GPU)")
    slurm = parser.add_argument_group("--launcher slurm (a YAML given by --slurm-config sets the same keys)")
    slurm.add_argument("--slurm-config", help="YAML with any of: " + ", ".join(SlurmConfig.keys()))
    slurm.add_argument("--slurm-partition", help="default: the cluster's default partition")
    slurm.add_argument("--slurm-account")
    slurm.add_argument("--slurm-qos")
    slurm.add_argument("--slurm-constraint", help="node features the jobs need (sbatch --constraint)")
    # The defaults are fitted to the partition's nodes before submitting; a value given here
    # that the partition cannot meet is refused at once instead (docs/slurm.md).
    slurm.add_argument("--slurm-train-minutes", type=int,
                       help=f"time limit of a training step (default {DEFAULT_TRAIN_MINUTES}, or the partition's)")
    slurm.add_argument("--slurm-other-minutes", type=int,
                       help=f"time limit of any other step (default {DEFAULT_OTHER_MINUTES}, or the partition's)")
    slurm.add_argument("--slurm-cpus-per-task", type=int,
                       help=f"CPUs of every step (default {DEFAULT_CPUS_PER_TASK}, or a node's CPUs when fewer)")
    slurm.add_argument("--slurm-mem-gb", type=int, help="memory of every step (default: the partition's)")
    slurm.add_argument("--slurm-cpu-only", action="store_true", default=None,
                       help="request no GPUs (a cluster without them; training runs on CPU)")


def build_launcher(kind: str, work_dir: str, args: argparse.Namespace) -> Union[LocalLauncher, SlurmLauncher]:
    if kind == "local":
        devices = visible_devices() if args.devices is None else [d for d in args.devices.split(",") if d.strip()]
        return LocalLauncher(devices, args.cpu_jobs, os.path.join(work_dir, "logs"))
    config = SlurmConfig.from_yaml(args.slurm_config) if args.slurm_config else SlurmConfig()
    config = config.with_overrides(
        partition=args.slurm_partition, account=args.slurm_account, qos=args.slurm_qos,
        constraint=args.slurm_constraint, train_minutes=args.slurm_train_minutes,
        other_minutes=args.slurm_other_minutes, cpus_per_task=args.slurm_cpus_per_task, mem_gb=args.slurm_mem_gb,
        cpu_only=args.slurm_cpu_only,
    )
    return SlurmLauncher(config, os.path.join(work_dir, "slurm"))
