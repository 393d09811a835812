#!/usr/bin/env python3
"""A graph of trivial steps (each a shell command) through the SLURM launcher, as the
recipe runs its own: for tests of what SLURM refuses, never starts or fails, in seconds.

    run_steps.py SPEC.json

SPEC: {"work_dir": DIR, "slurm": {SlurmConfig keys}, "steps": [{"name": "a", "command":
"sleep 1", "after": [], "gpus": 0, "trains": false}, ...]}. Like the recipe, a failure is
one ``error:`` line on stderr and exit status 1.
"""

import json
import os
import subprocess
import sys
from functools import partial

from fairseq_flea.io.errors import log_tool_progress, run_tool
from fairseq_flea.recipe.slurm_launcher import SlurmConfig, SlurmLauncher
from fairseq_flea.recipe.steps import Step, plan_steps


def main() -> None:
    with open(sys.argv[1]) as spec_file:
        spec = json.load(spec_file)
    log_tool_progress()
    work_dir = spec["work_dir"]
    steps = [
        Step(name=item["name"], stage=1, description=f"step {item['name']}",
             output_dir=os.path.join(work_dir, item["name"]),
             # subprocess.run pickles by reference: the job needs nothing of this file.
             action=partial(subprocess.run, ["sh", "-c", item["command"]], check=True),
             after=item.get("after", []), gpus=item.get("gpus", 0), trains=item.get("trains", False))
        for item in spec["steps"]
    ]
    plan = plan_steps(steps, 1, 1)
    if not plan.steps:
        print("every step is done already")
        return
    launcher = SlurmLauncher(SlurmConfig(**spec["slurm"]), os.path.join(work_dir, "slurm"))
    launcher.run(steps, plan).raise_if_failed()


if __name__ == "__main__":
    run_tool(main)
