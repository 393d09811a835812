"""Run fairseq's own multi-process (DDP) training on CPU, for tests and CPU-only machines.

On GPUs nothing here is needed: ``distributed_training.distributed_world_size=N`` makes
fairseq spawn one process per GPU. On CPU fairseq never spawns (it starts
``min(cuda devices, world size)`` = 0 processes) and its ``all_gather_list`` stages data
in a CUDA buffer. This launcher starts the N processes itself, each a normal
fairseq-hydra-train with an explicit rank and a gloo process group, and gives
``all_gather_list`` a CPU implementation. Gradient averaging, batch sharding, logging and
checkpointing are fairseq's unchanged code.
"""

import socket
import subprocess
import sys
from typing import Any, List, Optional, Sequence

import torch.distributed as dist


def all_gather_list_on_cpu(data: Any, group: Optional[Any] = None, max_size: int = 16384) -> List[Any]:
    """fairseq's ``all_gather_list`` without the CUDA staging buffer."""
    from fairseq import utils
    from fairseq.distributed import utils as distributed_utils

    group = group if group is not None else distributed_utils.get_global_group()
    gathered: List[Any] = [None] * dist.get_world_size(group=group)
    dist.all_gather_object(gathered, utils.move_to_cpu(data), group=group)
    return gathered


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rank_overrides(rank: int, world_size: int, port: int) -> List[str]:
    """The fairseq-hydra-train overrides that make one process rank ``rank`` of the job."""
    return [
        "common.cpu=true",
        "distributed_training.distributed_backend=gloo",
        f"distributed_training.distributed_world_size={world_size}",
        f"distributed_training.distributed_rank={rank}",
        f"distributed_training.device_id={rank}",
        f"distributed_training.distributed_init_method=tcp://127.0.0.1:{port}",
        "distributed_training.distributed_no_spawn=true",
    ]


def launch(world_size: int, hydra_train_args: Sequence[str]) -> int:
    """Train with ``world_size`` CPU processes; returns the first non-zero exit status, else 0."""
    port = free_local_port()
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", __name__, *hydra_train_args, *rank_overrides(rank, world_size, port)]
        )
        for rank in range(world_size)
    ]
    statuses = []
    for worker in workers:
        statuses.append(worker.wait())
        if statuses[-1] != 0:  # the others would wait for it forever in a collective
            for other in workers:
                other.terminate()
    return next((status for status in statuses if status != 0), 0)


def run_worker(hydra_train_args: Sequence[str]) -> None:
    """One rank: fairseq-hydra-train with the CPU all_gather_list in place."""
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli.hydra_train import cli_main

    distributed_utils.all_gather_list = all_gather_list_on_cpu
    sys.argv = ["fairseq-hydra-train", *hydra_train_args]
    cli_main()


if __name__ == "__main__":
    run_worker(sys.argv[1:])
