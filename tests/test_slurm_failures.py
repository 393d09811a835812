"""What SLURM cannot run ends the run with one line, on a real cluster (tests/slurm/start_cluster.sh).

sbatch refusing a job, a job SLURM accepts but will never start, a job that fails on its
node, and requests beyond what the partition offers: each is one ``error:`` line on stderr
naming the step, exit status 1, and no job of the run left in the queue. The jobs are shell
commands (tests/slurm/run_steps.py) or the recipe refused before its first job, so the file
takes seconds, not the minutes of the tiny recipe in test_slurm_launcher.py.

The first tests read SLURM's outputs as text and need no cluster.
"""

import json
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT, run_python_tool
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.recipe.slurm_launcher import (PartitionOffer, QueuedJob, SlurmConfig, SlurmLauncher, choose_partition,
                                                fit_config,
                                                never_start_hint, never_start_reason, parse_minutes, parse_sinfo,
                                                refusal_hint, sbatch_message)
from fairseq_flea.recipe.steps import Step
from test_slurm_cluster import submitit  # noqa: F401  (the fixture: a cluster that answers, or skip/fail)

RUN_STEPS = REPO_ROOT / "tests" / "slurm" / "run_steps.py"


# SLURM's outputs, read without a cluster ---------------------------------------------------

def test_partitions_are_read_from_sinfo_with_their_largest_node():
    offers, default = parse_sinfo(
        "debug*|2|4096|(null)|infinite|UNLIMITED\n"
        "gpu|32|256000|gpu:a100:4(S:0-1)|2-00:00:00|UNLIMITED\n"
        "gpu|64+|512000|gpu:a100:2,shard:8|2-00:00:00|UNLIMITED\n"
        "short|8|8000|(null)|30:00|4\n")
    assert default == "debug"
    assert offers["debug"] == PartitionOffer("debug", 2, 4096, 0, None)
    assert offers["gpu"] == PartitionOffer("gpu", 64, 512000, 4, 2880)  # each the largest of its kinds of node
    assert offers["short"] == PartitionOffer("short", 4, 8000, 0, 30)  # MaxCPUsPerNode caps the node's 8
    assert [parse_minutes(text) for text in ("5:00", "1:00:00", "1-12", "45", "0:30", "UNLIMITED")] == \
        [5, 60, 2160, 45, 1, None]


def test_a_partition_is_chosen_by_name_or_as_the_default():
    offers, default = parse_sinfo("debug*|2|4096|(null)|infinite|UNLIMITED\ngpu|32|256000|gpu:4|1-00:00:00|8\n")
    assert choose_partition(offers, default, None).name == "debug"
    assert choose_partition(offers, default, "debug,gpu") == PartitionOffer("debug,gpu", 8, 256000, 4, None)
    with pytest.raises(FleaInputError, match=r"^--slurm-partition gpu2: no such partition gpu2 \(sinfo lists debug, "
                                             r"gpu\)$"):
        choose_partition(offers, default, "gpu2")
    with pytest.raises(FleaInputError, match="no default partition: give --slurm-partition"):
        choose_partition(offers, None, None)


def steps(gpus=1):
    return [Step("tapt_labels", 1, "TAPT labels", "/nowhere", print, gpus=gpus),
            Step("fold1/tapt", 1, "TAPT", "/nowhere", print, gpus=gpus, trains=True)]


SMALL = PartitionOffer("debug", 2, 4096, 0, 60)


def test_defaults_are_fitted_to_the_partition_and_said():
    config, notes = fit_config(SlurmConfig(cpu_only=True), steps(), SMALL)
    assert (config.cpus_per_task, config.train_minutes, config.other_minutes) == (2, 60, 60)
    assert notes == ["2 CPUs per job, not 8: the nodes of partition debug have 2",
                     "--slurm-train-minutes 60, not 720: partition debug has a time limit of 60 min (a pretraining "
                     "that runs out resumes from checkpoint_last.pt when the recipe is run again)",
                     "--slurm-other-minutes 60, not 120: partition debug has a time limit of 60 min"]
    big = PartitionOffer("big", 64, 10 ** 6, 8, None)
    assert fit_config(SlurmConfig(), steps(), big) == (SlurmConfig(cpus_per_task=8, train_minutes=720,
                                                                   other_minutes=120), [])


@pytest.mark.parametrize("config, offer, message", [
    (SlurmConfig(cpus_per_task=8, cpu_only=True), SMALL,
     "--slurm-cpus-per-task 8 asks for more CPUs than a node of partition debug has (2): give "
     "--slurm-cpus-per-task 2 or fewer, or another --slurm-partition"),
    (SlurmConfig(train_minutes=720, cpu_only=True), SMALL,
     "--slurm-train-minutes 720 exceeds the time limit of partition debug (60 min): give --slurm-train-minutes 60 or "
     "less, or another --slurm-partition"),
    (SlurmConfig(mem_gb=64, cpu_only=True), SMALL,
     "--slurm-mem-gb 64 asks for more memory than a node of partition debug has (4096 MB): give --slurm-mem-gb 4 or "
     "less, or another --slurm-partition"),
    (SlurmConfig(), SMALL,
     "step tapt_labels asks for 1 GPU, but partition debug has no GPUs (no gpu gres on its nodes): add "
     "--slurm-cpu-only to run every step on CPUs, or give a --slurm-partition with GPUs (these have GPUs: gpu)"),
    (SlurmConfig(), PartitionOffer("gpu", 32, 10 ** 6, 2, None),
     "step tapt_labels asks for 4 GPUs, but a node of partition gpu has 2: give --gpus-per-step 2 or fewer, or a "
     "--slurm-partition with bigger nodes"),
])
def test_a_request_given_beyond_the_partition_is_refused_at_once(config, offer, message):
    with pytest.raises(FleaInputError) as refused:
        fit_config(config, steps(gpus=4 if offer.gpus else 1), offer, gpu_partitions=["gpu"])
    assert str(refused.value) == message


@pytest.mark.parametrize("code", [
    "PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidAccount", "InvalidQOS",
    "AccountNotAllowed", "QOSNotAllowed", "QOSMaxCpuPerJobLimit", "AssocMaxCpuPerJobLimit",
    "QOSMaxWallDurationPerJobLimit", "AssocMaxWallDurationPerJobLimit", "QOSMaxNodePerJobLimit", "QOSMaxGRESPerJob",
    "AssocMaxMemPerJob", "QOSMaxMemoryPerNode", "AssocMaxCpuPerNode", "QOSMinCpuNotSatisfied", "QOSMinGRES",
    "QOSMaxCpuMinutesPerJobLimit", "MaxMemPerLimit",
])
def test_pending_reasons_that_never_clear(code):
    assert never_start_reason(code)


@pytest.mark.parametrize("code", [
    "Priority", "Resources", "Dependency", "None", "BeginTime", "JobHeldUser", "JobHeldAdmin", "QOSGrpCpuLimit",
    "AssocGrpCpuLimit", "AssocGrpGRES", "QOSMaxJobsPerUserLimit", "QOSMaxCpuPerUserLimit", "QOSMaxGRESPerUser",
    "AssocMaxJobsLimit", "MaxCpuPerAccount", "PartitionDown", "NodeDown", "Reservation", "QOSJobLimit",
    "ReqNodeNotAvail",  # only when a node it needs does not exist (missing_nodes): down nodes come back
    "DependencyNeverSatisfied",  # kill-on-invalid-dep: SLURM cancels it, and only its branch of the graph stops
])
def test_pending_reasons_that_mean_wait(code):
    assert not never_start_reason(code)


def test_a_never_start_hint_names_what_exceeds_the_partition():
    job = QueuedJob("12", "PENDING", "PartitionConfig", "debug", "8", "1", "12:00:00", "0", "gres:gpu:1")
    assert job.reason_code == "PartitionConfig"
    assert job.describe_request() == "it asks for 8 CPUs on 1 node, 1 GPU, a time limit of 720 min"
    assert never_start_hint("PartitionConfig", job, SMALL) == (
        "--slurm-cpus-per-task 2 or fewer, --slurm-cpu-only, --slurm-train-minutes / --slurm-other-minutes 60 or less")
    assert QueuedJob("1", "PENDING", "ReqNodeNotAvail, UnavailableNodes:n[1-2]").reason_code == "ReqNodeNotAvail"


def test_sbatch_messages_are_one_line_with_a_hint_for_the_flag_that_fits():
    message = sbatch_message(
        "sbatch: error: Memory specification can not be satisfied\n"
        "sbatch: error: Batch job submission failed: Requested node configuration is not available\n")
    assert message == ("Memory specification can not be satisfied; Batch job submission failed: Requested node "
                       "configuration is not available")
    hints = {text: refusal_hint(text, SlurmConfig()) for text in (
        message, "Invalid generic resource (gres) specification", "invalid partition specified: gpu",
        "Batch job submission failed: Invalid account or account/partition combination specified",
        "Batch job submission failed: Invalid qos specification", "Invalid feature specification",
        "CPU count per node can not be satisfied")}
    assert [hint.split()[:2] for hint in hints.values()] == [
        ["give", "--slurm-mem-gb"], ["add", "--slurm-cpu-only"], ["give", "--slurm-partition"],
        ["give", "--slurm-account"], ["give", "--slurm-qos"], ["give", "--slurm-constraint"],
        ["give", "--slurm-cpus-per-task"]]
    assert "additional in --slurm-config" in refusal_hint("Invalid generic resource (gres) specification",
                                                          SlurmConfig(cpu_only=True))


# On the cluster ---------------------------------------------------------------------------

def error_line(result: subprocess.CompletedProcess) -> str:
    """The run's one line on stderr: it failed, said why in one line, and nothing else."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


def slurm(*command: str) -> str:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.fixture(scope="module")
def node(submitit):  # noqa: F811
    """The default partition's CPUs and GPUs per node: what the tests ask beyond."""
    offers, default = parse_sinfo(slurm("sinfo", "--noheader", "--format=%P|%c|%m|%G|%l|%B"))
    return offers[default]


def job_states(job_ids):
    listed = slurm("squeue", "--noheader", "--states=all", "--format=%i|%T", "--jobs", ",".join(job_ids))
    return dict(line.split("|") for line in listed.split())


def job_ids_of(result):
    import re

    return re.findall(r": submitted as SLURM job (\d+)", result.stdout)


def start_steps(work_dir, steps, **slurm_config) -> subprocess.Popen:
    """tests/slurm/run_steps.py on ``steps`` (each a shell command), as its own process."""
    work_dir.mkdir(parents=True, exist_ok=True)
    spec = work_dir / "spec.json"
    config = {"poll_seconds": 0.5, "status_seconds": 60, "cpu_only": True, "cpus_per_task": 1, **slurm_config}
    spec.write_text(json.dumps({"work_dir": str(work_dir), "slurm": config, "steps": steps}))
    return subprocess.Popen([sys.executable, str(RUN_STEPS), str(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_steps(work_dir, steps, **slurm_config) -> subprocess.CompletedProcess:
    return finished(start_steps(work_dir, steps, **slurm_config))


@pytest.fixture(scope="module")
def limited_partition(submitit):  # noqa: F811
    """A partition of the cluster's nodes with a 1-minute time limit, for this module only."""
    name = f"flea_short_{int(time.time()) % 100000}"
    slurm("scontrol", "create", f"PartitionName={name}", "Nodes=ALL", "MaxTime=1", "State=UP")
    yield name
    subprocess.run(["scontrol", "delete", f"PartitionName={name}"], timeout=60)


@pytest.mark.parametrize("case", ["CPUs beyond a node", "time beyond the partition's limit"])
def test_a_job_slurm_will_never_start_ends_the_run_with_its_reason(case, node, limited_partition, tmp_path):
    if case == "CPUs beyond a node":
        config, reason = {"cpus_per_task": node.cpus + 1}, "PartitionConfig"
        offers, fix = f"partition {node.name} offers nodes of {node.cpus} CPU", f"--slurm-cpus-per-task {node.cpus}"
    else:
        config, reason = {"partition": limited_partition, "train_minutes": 10}, "PartitionTimeLimit"
        offers, fix = f"partition {limited_partition} offers", "--slurm-other-minutes 1 or less"
    # Not fitted first: what is asked for reaches SLURM, which accepts it and leaves it pending.
    started = time.monotonic()
    result = run_steps(tmp_path, [{"name": "train", "command": "true", "trains": True},
                                  {"name": "evaluate", "command": "true", "after": ["train"]}],
                       fit_to_partition=False, never_start_seconds=5, **config)
    line = error_line(result)
    jobs = job_ids_of(result)
    assert line.startswith(f"error: step train: SLURM will never start job {jobs[0]} ({reason}): it asks for "), line
    assert offers in line and fix in line, line
    assert f"cancelled the 2 jobs the run waited for ({' '.join(jobs)})" in line
    assert time.monotonic() - started < 30
    assert set(job_states(jobs).values()) == {"CANCELLED"}


def test_an_sbatch_refusal_names_the_step_and_cancels_what_the_run_submitted(node, tmp_path):
    if node.gpus:
        pytest.skip("this cluster has GPUs: sbatch takes the job")
    result = run_steps(tmp_path, [{"name": "labels", "command": "sleep 60"},
                                  {"name": "train", "command": "true", "gpus": 1, "trains": True}],
                       cpu_only=False, fit_to_partition=False)
    line = error_line(result)
    jobs = job_ids_of(result)
    assert line == ("error: step train: sbatch refused the job: Invalid generic resource (gres) specification; add "
                    "--slurm-cpu-only to run every step without GPUs, or give a --slurm-partition whose nodes have "
                    "them (sinfo -o '%P %G' lists each partition's gres); cancelled the 1 job this run had submitted "
                    f"({jobs[0]})")
    assert job_states(jobs) == {jobs[0]: "CANCELLED"}


def test_a_job_that_fails_on_its_node_is_named_with_its_state_and_log_and_a_rerun_resumes(node, tmp_path):
    # A 1-minute limit: SLURM's signal to submitit (90 s before the end) comes within seconds.
    # It runs beside the failing graph below, on a CPU of its own, to take no time of its own.
    timing_out = start_steps(tmp_path / "timeout", [{"name": "train", "command": "sleep 100"}], other_minutes=1)

    work_dir = tmp_path / "failing"
    steps = [{"name": "labels", "command": "true"}, {"name": "train", "command": "exit 3", "after": ["labels"]},
             {"name": "evaluate", "command": "true", "after": ["train"]}]
    first = run_steps(work_dir, steps)
    line = error_line(first)
    labels, train, _ = job_ids_of(first)
    log = work_dir / "slurm" / "train" / f"{train}_0_log.err"
    assert line == ("error: 1 step(s) failed, 1 waiting for them did not run (each is logged above); the first: "
                    f"train: SLURM job {train} FAILED: subprocess.CalledProcessError: Command '['sh', '-c', 'exit 3']' "
                    f"returned non-zero exit status 3. (log {log})")
    assert "exit status 3" in log.read_text()
    assert (work_dir / "labels" / ".done").exists()

    steps[1]["command"] = "true"
    again = run_steps(work_dir, steps)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [name for name in ("labels", "train", "evaluate") if f"step {name}: submitted" in again.stdout] == \
        ["train", "evaluate"]

    timed_out = finished(timing_out)
    line = error_line(timed_out)
    (job,) = job_ids_of(timed_out)
    log = tmp_path / "timeout" / "slurm" / "train" / f"{job}_0_log.err"
    assert line == ("error: 1 step(s) failed, 0 waiting for them did not run (each is logged above); the first: "
                    f"train: SLURM job {job} TIMEOUT (SLURM says FAILED): it ran out of its time limit "
                    "(--slurm-train-minutes / --slurm-other-minutes; a pretraining resumes from checkpoint_last.pt "
                    f"when the recipe is run again) (log {log})")


def test_the_recipe_refuses_at_once_what_the_partition_cannot_give(node, iemocap_tree, tmp_path):
    (tmp_path / "hubert.pt").write_text("never read: nothing is submitted")
    recipe = ["../recipes/iemocap/run.py", "--iemocap", iemocap_tree.root, "--work-dir", tmp_path / "work",
              "--hubert", tmp_path / "hubert.pt", "--hubert-kmeans", tmp_path / "hubert.pt", "--folds", 1,
              "--directions", "FM", "--layers", 1, "--clusters", 4, "--launcher", "slurm"]
    stage0 = run_python_tool(*recipe, "--stop-stage", 0)
    assert stage0.returncode == 0, stage0.stderr[-3000:]

    too_many = error_line(run_python_tool(*recipe, "--slurm-cpu-only", "--slurm-cpus-per-task", node.cpus + 1))
    assert too_many == (f"error: --slurm-cpus-per-task {node.cpus + 1} asks for more CPUs than a node of partition "
                        f"{node.name} has ({node.cpus}): give --slurm-cpus-per-task {node.cpus} or fewer, or another "
                        "--slurm-partition")
    if not node.gpus:
        no_gpus = error_line(run_python_tool(*recipe))
        assert no_gpus.startswith(f"error: step tapt_labels asks for 1 GPU, but partition {node.name} has no GPUs "
                                  "(no gpu gres on its nodes): add --slurm-cpu-only"), no_gpus
    assert not (tmp_path / "work" / "slurm").exists() or not list((tmp_path / "work" / "slurm").rglob("job_id"))


def test_req_node_not_avail_gives_up_only_for_a_node_that_does_not_exist(node):
    here = slurm("sinfo", "--noheader", "--Node", "--format=%N").split()[0]
    absent = QueuedJob("7", "PENDING", "ReqNodeNotAvail, UnavailableNodes:flea-absent[1-2]")
    assert SlurmLauncher.never_start(absent) == "ReqNodeNotAvail: node flea-absent1, flea-absent2 does not exist"
    down = QueuedJob("8", "PENDING", f"ReqNodeNotAvail, UnavailableNodes:{here}")  # down or drained: it comes back
    assert SlurmLauncher.never_start(down) is None
    assert SlurmLauncher.never_start(QueuedJob("9", "PENDING", "PartitionConfig")) == "PartitionConfig"
    assert SlurmLauncher.never_start(QueuedJob("9", "RUNNING", "PartitionConfig")) is None


def test_a_job_pending_for_resources_is_waited_for_with_status_lines(node, tmp_path):
    # Each job takes every CPU of the node: the second waits (Resources, or Priority) for the first.
    result = run_steps(tmp_path, [{"name": "first", "command": "sleep 2"}, {"name": "second", "command": "true"}],
                       cpus_per_task=node.cpus, status_seconds=0.5)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    statuses = [line for line in result.stdout.splitlines() if line.startswith("INFO: SLURM: ")]
    assert any("1 queued, 1 running, 0 done, 0 failed or not run, of 2 jobs; oldest pending: second (job " in line
               for line in statuses), result.stdout
    assert "of 2 jobs" in statuses[-1]

