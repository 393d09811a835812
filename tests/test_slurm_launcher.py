"""The tiny recipe through --launcher slurm on a real SLURM cluster (tests/slurm/start_cluster.sh)."""

import re

import pytest

from conftest import run_python_tool
from test_recipe import TINY
from test_slurm_cluster import submitit  # noqa: F401  (the fixture: a cluster that answers, or skip/fail)

TOO_MANY_CLUSTERS = 100000  # more than the frames of the tiny corpus: that labels step fails


def run_recipe_on_slurm(tree, work_dir, stand_in, slurm_config, clusters):
    hubert, kmeans = stand_in
    tiny = [value for value in TINY if value not in ("--cpu-jobs", "2")]
    return run_python_tool(
        "../recipes/iemocap/run.py", "--iemocap", tree.root, "--work-dir", work_dir, "--hubert", hubert,
        "--hubert-kmeans", kmeans, "--tapt-label-layer", 1, "--folds", 1, "--directions", "FM", "--layers", 1,
        "--clusters", *clusters, "--poolings", "attention", *tiny,
        "--launcher", "slurm", "--slurm-config", slurm_config, timeout=900,
    )


def submitted(result):
    return re.findall(r"stage \d (.*?): submitted as SLURM job (\d+)", result.stdout)


@pytest.fixture(scope="module")
def slurm_run(submitit, iemocap_tree, released_stand_in, tmp_path_factory):  # noqa: F811
    work_dir = tmp_path_factory.mktemp("slurm_recipe")
    slurm_config = work_dir / "slurm.yaml"
    slurm_config.write_text("cpus_per_task: 1\ncpu_only: true\npoll_seconds: 1\ntrain_minutes: 15\nother_minutes: 10\n")
    first = run_recipe_on_slurm(iemocap_tree, work_dir, released_stand_in, slurm_config, [4, TOO_MANY_CLUSTERS])
    return work_dir, slurm_config, first


def test_every_step_is_a_slurm_job_and_a_failure_stops_only_its_dependants(slurm_run):
    work_dir, _, first = slurm_run
    jobs = submitted(first)
    # TAPT labels (corpus, fold), TAPT, splits, TAPT fine-tuning, layer features, then per K
    # labels, CPT, fine-tuning, evaluation; and the TAPT classifier's evaluation
    assert len(jobs) == 6 + 2 * 4 + 1, first.stdout[-3000:]
    assert len({job_id for _, job_id in jobs}) == len(jobs)
    assert first.returncode == 1
    assert first.stderr.strip().splitlines()[-1].startswith(
        "error: 1 step(s) failed, 3 waiting for them did not run (each is logged above); the first: "
        f"fold1/FM/L1_K{TOO_MANY_CLUSTERS}/labels: SLURM job ")
    assert f"{TOO_MANY_CLUSTERS} clusters requested but only" in first.stderr
    failed_k = work_dir / "fold1" / "FM" / f"L1_K{TOO_MANY_CLUSTERS}"
    assert not (failed_k / "cpt").exists() and not (failed_k / "labels" / ".done").exists()
    for done in ("tapt_labels", "fold1/tapt", "fold1/FM/tapt_mean/eval_test", "fold1/FM/L1_K4/attention/eval_test"):
        assert (work_dir / done / ".done").is_file(), done
    assert (work_dir / "fold1" / "FM" / "L1_features" / ".done").exists()  # kept: one of its readers failed
    assert "| 1 | 4 |" in (work_dir / "results.md").read_text()
    logs = list((work_dir / "slurm" / "fold1" / "FM" / "L1_K4" / "labels").glob("*_log.out"))
    assert len(logs) == 1 and "no leakage" in logs[0].read_text()  # each step's own log


def test_a_rerun_submits_nothing_that_is_done(slurm_run, iemocap_tree, released_stand_in):
    work_dir, slurm_config, _ = slurm_run
    again = run_recipe_on_slurm(iemocap_tree, work_dir, released_stand_in, slurm_config, [4])
    assert again.returncode == 0, again.stderr[-2000:]
    assert submitted(again) == []
    assert "every selected step is done already, skipped" in again.stdout
    removed = [path.name for path in (work_dir / "fold1" / "FM" / "L1_features").iterdir()]
    assert removed == [".removed"]  # its readers are all done now
