"""A real SLURM cluster runs submitit jobs: the ground the SLURM launcher stands on.

Needs a cluster: `eval "$(tests/slurm/start_cluster.sh)"` starts a one-node
one here (CI does this in .ci/run). Without SLURM_CONF and without sbatch on
PATH these tests skip; with FLEA_REQUIRE_SLURM=1 they fail instead of skipping
when no cluster answers or submitit is missing.
"""

import os
import shutil
import subprocess
import time

import pytest

REQUIRE_SLURM = os.environ.get("FLEA_REQUIRE_SLURM") == "1"
JOB_TIMEOUT_S = 60


def _unavailable(reason: str) -> None:
    if REQUIRE_SLURM:
        pytest.fail(f"FLEA_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def submitit():
    if not os.environ.get("SLURM_CONF") and shutil.which("sbatch") is None:
        _unavailable("no SLURM cluster: SLURM_CONF is not set and sbatch is not on PATH")
    for tool in ("sbatch", "sacct", "srun"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not on PATH")
    try:
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        _unavailable(f"scontrol ping failed: {error}")
    if ping.returncode != 0 or "UP" not in ping.stdout:
        _unavailable(
            f"slurmctld does not answer (SLURM_CONF={os.environ.get('SLURM_CONF')!r}): "
            f"{(ping.stdout + ping.stderr).strip()}"
        )
    try:
        import submitit as module
    except ImportError as error:
        _unavailable(f"submitit is not installed: {error}")
    return module


def _wait_done(job) -> None:
    """Poll sacct (through submitit) until the job has ended, at most JOB_TIMEOUT_S."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not job.done(force_check=True):
        if time.monotonic() > deadline:
            subprocess.run(["scancel", str(job.job_id)], timeout=20)
            pytest.fail(f"job {job.job_id} still {job.state} after {JOB_TIMEOUT_S}s")
        time.sleep(0.5)


def _sacct_state(job, expected: str) -> str:
    """The job's state as sacct tells it, once it is ``expected`` or JOB_TIMEOUT_S passed.

    slurmctld hands job records to slurmdbd asynchronously, so sacct can lag
    a few seconds behind the job (PENDING while its result is already written).
    """
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "State", "-j", str(job.job_id)],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.split()
        state = out[0] if out else ""
        if state.startswith(expected) or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def test_submitit_job_runs_a_function_and_returns_its_result(submitit, tmp_path):
    # Functions defined here are pickled by value, so the job needs no import of this file.
    def add(a, b):
        return a + b, os.environ.get("SLURM_JOB_ID")

    executor = submitit.AutoExecutor(folder=tmp_path / "%j")
    executor.update_parameters(timeout_min=2, cpus_per_task=1, name="flea-slurm-test")
    job = executor.submit(add, 2, 3)
    _wait_done(job)

    assert job.result() == (5, job.job_id)
    assert _sacct_state(job, "COMPLETED") == "COMPLETED"
    assert job.paths.stdout.exists()


def test_job_waits_for_its_dependency_and_is_cancelled_when_it_fails(submitit, tmp_path):
    def fail():
        raise ValueError("flea slurm test: deliberate failure")

    def after_first():
        return "second"

    first = submitit.AutoExecutor(folder=tmp_path / "%j")
    first.update_parameters(timeout_min=2)

    def dependent_on(job):
        executor = submitit.AutoExecutor(folder=tmp_path / "%j")
        executor.update_parameters(
            timeout_min=2,
            slurm_additional_parameters={
                "dependency": f"afterok:{job.job_id}",
                "kill_on_invalid_dep": "yes",
            },
        )
        return executor

    # afterok on a job that succeeds: runs after it.
    ok = first.submit(after_first)
    waiting = dependent_on(ok).submit(after_first)
    _wait_done(waiting)
    assert waiting.result() == "second"
    assert ok.done()

    # afterok on a job that fails: cancelled, not left pending forever.
    failing = first.submit(fail)
    orphan = dependent_on(failing).submit(after_first)
    _wait_done(orphan)
    _wait_done(failing)
    assert _sacct_state(failing, "FAILED") == "FAILED"
    assert "deliberate failure" in str(failing.exception())
    assert _sacct_state(orphan, "CANCELLED").startswith("CANCELLED")
    assert orphan.state.startswith("CANCELLED")
