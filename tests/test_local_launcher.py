"""The step graph and the local launcher, with probe steps in real step processes on a fake device list."""

import itertools
import json
import re
from functools import partial

import pytest

from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.recipe.local_launcher import LocalLauncher
from fairseq_flea.recipe.steps import Step, format_plan, format_stage_costs, mark_done, plan_steps, remove_finished_scratch
from launcher_probe import fail, record_devices


def probe(tmp_path, name, gpus=0, after=(), seconds=0.4, action=None, stage=2, scratch=False):
    return Step(name=name, stage=stage, description=name, output_dir=str(tmp_path / "work" / name),
                action=action or partial(record_devices, str(tmp_path / f"{name}.json"), seconds),
                after=list(after), gpus=gpus, scratch=scratch)


def records(tmp_path, names):
    return {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in names}


def test_steps_share_the_devices_without_overlap(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    steps = [probe(tmp_path, f"one_gpu_{i}", gpus=1) for i in range(4)]
    steps += [probe(tmp_path, "two_gpus", gpus=2), probe(tmp_path, "cpu_work")]
    report = LocalLauncher(["3", "5", "7"], cpu_jobs=1, log_dir=str(tmp_path / "logs")).run(steps, plan_steps(steps, 1, 5))
    assert sorted(report.finished) == sorted(step.name for step in steps) and not report.failed
    seen = records(tmp_path, [step.name for step in steps])
    assert seen["cpu_work"]["devices"] is None  # CPU work is not handed a GPU
    for step in steps:
        if step.gpus:
            devices = seen[step.name]["devices"].split(",")
            assert len(devices) == step.gpus and set(devices) <= {"3", "5", "7"}
    gpu_steps = [name for name in seen if name != "cpu_work"]
    overlapping = 0
    for first, second in itertools.combinations(gpu_steps, 2):
        a, b = seen[first], seen[second]
        if a["start"] < b["end"] and b["start"] < a["end"]:
            overlapping += 1
            assert not set(a["devices"].split(",")) & set(b["devices"].split(",")), (first, second)
    assert overlapping >= 2  # three devices: steps ran side by side
    assert all((tmp_path / "work" / step.name / ".done").is_file() for step in steps)
    assert (tmp_path / "logs" / "two_gpus.log").is_file()
    costs = format_stage_costs(steps)  # every step's time came back in its marker
    assert re.search(r"\| 2 \| stage 2 \| 6 \| 6 \| 0 \| 0\.00 \| 0\.00 \|", costs), costs


def test_a_failed_step_stops_only_its_dependants(tmp_path):
    steps = [
        probe(tmp_path, "breaks", action=partial(fail, "probe input is bad")),
        probe(tmp_path, "after_breaks", after=["breaks"]),
        probe(tmp_path, "after_that", after=["after_breaks"]),
        probe(tmp_path, "independent"),
        probe(tmp_path, "after_independent", after=["independent"]),
    ]
    report = LocalLauncher([], cpu_jobs=2, log_dir=str(tmp_path / "logs")).run(steps, plan_steps(steps, 1, 5))
    assert report.failed == {"breaks": "probe input is bad"}
    assert report.not_run == ["after_breaks", "after_that"]
    assert sorted(report.finished) == ["after_independent", "independent"]
    assert not (tmp_path / "work" / "breaks" / ".done").exists()
    with pytest.raises(Exception, match="1 step\\(s\\) failed, 2 waiting for them did not run"):
        report.raise_if_failed()
    rerun = plan_steps(steps, 1, 5)
    assert [step.name for step in rerun.steps] == ["breaks", "after_breaks", "after_that"]


def test_a_step_needing_more_gpus_than_lent_is_refused_before_anything_runs(tmp_path):
    steps = [probe(tmp_path, "small", gpus=1), probe(tmp_path, "ddp", gpus=4)]
    with pytest.raises(FleaInputError, match="stage 2 ddp needs 4 GPUs; this machine lends it 2"):
        LocalLauncher(["0", "1"], cpu_jobs=1, log_dir=str(tmp_path / "logs")).run(steps, plan_steps(steps, 1, 5))
    assert not (tmp_path / "small.json").exists()


def test_scratch_outputs_are_made_only_for_readers_and_removed_after_them(tmp_path):
    features = probe(tmp_path, "features", gpus=1, scratch=True)
    readers = [probe(tmp_path, f"labels_{k}", after=["features"]) for k in (50, 100)]
    steps = [features, *readers]
    assert [step.name for step in plan_steps(steps, 1, 5).steps] == ["features", "labels_50", "labels_100"]
    LocalLauncher([], cpu_jobs=1, log_dir=str(tmp_path / "logs")).run(steps, plan_steps(steps, 1, 5))
    features_dir = tmp_path / "work" / "features"
    assert [path.name for path in features_dir.iterdir()] == [".removed"]  # removed once both readers were done
    assert plan_steps(steps, 1, 5).steps == []  # and not made again for nothing
    more = [*steps, probe(tmp_path, "labels_150", after=["features"])]
    assert [step.name for step in plan_steps(more, 1, 5).steps] == ["features", "labels_150"]
    assert remove_finished_scratch(more) == []


def test_a_dependency_outside_the_selected_stages_must_be_done(tmp_path):
    made_earlier = probe(tmp_path, "tapt", stage=1)
    steps = [made_earlier, probe(tmp_path, "cpt", stage=3, after=["tapt"])]
    with pytest.raises(FleaInputError, match="stage 3 cpt: .*tapt is missing; stage 1 \\(tapt\\) makes it, run that first"):
        plan_steps(steps, 3, 5)
    mark_done(made_earlier.output_dir)
    plan = plan_steps(steps, 3, 5)
    assert [step.name for step in plan.steps] == ["cpt"]
    printed = format_plan(steps, plan, str(tmp_path / "work"))
    assert "done     1      0     tapt" in printed and "run      3      0     cpt  <- tapt" in printed
    assert printed.endswith("1 of 2 steps would run (0 on GPUs); 1 are done")
