"""The whole FLEA recipe with tiny configs on a generated IEMOCAP-shaped tree (2 folds)."""

import os
import re
import signal
import subprocess
import sys
import time
from functools import partial

import pytest

from conftest import REPO_ROOT, assert_succeeded, run_python_tool
from fairseq_flea.io.errors import FleaInputError, FleaStepError
from fairseq_flea.io.manifest import read_manifest
from fairseq_flea.recipe.flea_recipe import FleaRecipe, RecipeConfig, check_selected_on
from fairseq_flea.recipe.processes import hydra_train, run_in_own_process

TINY = [
    "--tapt-config", "tapt_tiny", "--cpt-config", "flea_cpt_tiny",
    "--mean-config", "ser_mean_tiny", "--attention-config", "ser_attention_tiny",
    "--precision", "fp32", "--overrides", "optimization.max_update=2", "--cpu-jobs", "2",
]


def run_recipe(tree, work_dir, stand_in):
    hubert, kmeans = stand_in
    return run_python_tool(
        "../recipes/iemocap/run.py", "--iemocap", tree.root, "--work-dir", work_dir, "--hubert", hubert,
        "--hubert-kmeans", kmeans, "--tapt-label-layer", 1, "--layers", 1, "--clusters", 4,
        "--poolings", "attention", *TINY, timeout=900,
    )


def steps_run(result):
    return re.findall(r"stage (\d) (.*?): running", result.stdout + result.stderr)


@pytest.fixture(scope="module")
def recipe_run(iemocap_tree, released_stand_in, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("recipe")
    result = run_recipe(iemocap_tree, work_dir, released_stand_in)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work_dir, result


def test_every_speaker_is_tested_in_both_directions(recipe_run, iemocap_tree):
    work_dir, result = recipe_run
    stages = [int(stage) for stage, _ in steps_run(result)]
    # TAPT labels of the corpus once; per fold its TAPT labels and pretraining; per direction
    # its splits, TAPT fine-tuning, layer features, labels, CPT, FLEA fine-tuning, and the
    # evaluation of both fine-tuned models
    assert stages.count(0) == 1 and stages.count(1) == 1 + 5 * (2 + 2 * 2)
    assert stages.count(2) == 5 * 2 * 2 and stages.count(3) == stages.count(4) == 5 * 2
    assert stages.count(5) == 5 * 2 * 2
    assert steps_run(result).count(("1", "TAPT labels of the whole corpus")) == 1
    table = (work_dir / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| Layers | Clusters | Average pooling (ours) | (paper, other protocol) |")
    tapt = next(row for row in rows if row.startswith("| TAPT | - | "))
    assert "74.1/72.8" in tapt and tapt.count("±") == 2 and "(10)" in tapt
    flea = next(row for row in rows if row.startswith("| 1 | 4 |"))
    assert flea.count("±") == 2 and "(10)" in flea  # attention pooling only
    assert "10 test speakers of folds 1, 2, 3, 4, 5" in table and "(validation UA + test UA) / 2" in table
    tested = {row.split(" | ")[3] for row in rows if row.startswith("| TAPT, mean | ")}
    assert tested == {u.speaker for u in iemocap_tree.utterances}
    assert len(tested) == 10


def test_each_direction_selects_on_its_own_speaker_and_tests_the_other(recipe_run):
    work_dir, _ = recipe_run
    fold = work_dir / "data" / "fold3"
    assert (fold / "FM" / "valid.spk").read_text() == (fold / "MF" / "test.spk").read_text()
    assert (fold / "FM" / "test.spk").read_text() == (fold / "MF" / "valid.spk").read_text()
    assert set((fold / "FM" / "valid.spk").read_text().split()) == {"Ses03F"}
    for direction in ("FM", "MF"):
        classifier = work_dir / "fold3" / direction / "tapt_mean" / "checkpoint_best.pt"
        check_selected_on(str(classifier), str(fold / direction))
    with pytest.raises(FleaInputError, match="its labels would leak"):
        check_selected_on(str(work_dir / "fold3" / "MF" / "tapt_mean" / "checkpoint_best.pt"), str(fold / "FM"))


def test_tapt_recreates_the_label_embeddings(recipe_run):
    work_dir, _ = recipe_run
    log = (work_dir / "fold1" / "tapt" / "train.log").read_text()
    assert "are re-created (task.label_embeddings=reset)" in log


def test_k_means_and_pretraining_saw_training_sessions_only(recipe_run):
    work_dir, result = recipe_run
    assert "no leakage" in (work_dir / "logs" / "fold1" / "FM" / "L1_K4" / "labels.log").read_text()
    for fold in (1, 2):
        held_out_session = f"Session{fold}"
        pretrain = (work_dir / "data" / f"fold{fold}" / "pretrain" / "train.tsv").read_text()
        assert held_out_session not in pretrain
        labels = (work_dir / f"fold{fold}" / "FM" / "L1_K4" / "labels" / "train.km").read_text().splitlines()
        assert len(labels) == len(pretrain.splitlines()) - 1


def test_second_run_skips_and_a_deleted_step_reruns_alone(recipe_run, iemocap_tree, released_stand_in):
    work_dir, _ = recipe_run
    again = run_recipe(iemocap_tree, work_dir, released_stand_in)
    assert again.returncode == 0 and steps_run(again) == []
    assert "done already, skipped" in again.stdout

    cpt = work_dir / "fold2" / "MF" / "L1_K4" / "cpt"
    for path in sorted(cpt.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    cpt.rmdir()
    partial = run_recipe(iemocap_tree, work_dir, released_stand_in)
    assert partial.returncode == 0, partial.stderr[-2000:]
    assert steps_run(partial) == [("3", "fold 2 MF layer 1 K=4 CPT")]
    assert os.path.isfile(cpt / "checkpoint_last.pt")


def test_seeds_repeat_every_fine_tuning_and_labels_come_from_the_first(tmp_path):
    recipe = FleaRecipe(RecipeConfig(
        work_dir=str(tmp_path), hubert_checkpoint="h.pt", hubert_kmeans="k.bin", corpus_csv="c.csv",
        layers=[9], clusters=[50], poolings=["attention"], seeds=[3, 7],
    ))
    runs = [os.path.relpath(path, tmp_path) for path in recipe.finetuned_models(2, "MF")]
    assert runs == ["fold2/MF/tapt_mean_seed3", "fold2/MF/tapt_mean_seed7",
                    "fold2/MF/L9_K50/attention_seed3", "fold2/MF/L9_K50/attention_seed7"]
    assert recipe.tapt_classifier(2, "MF") == str(tmp_path / "fold2" / "MF" / "tapt_mean_seed3" / "checkpoint_best.pt")


def test_a_model_loading_step_runs_in_a_process_of_its_own():
    assert run_in_own_process(os.getpid, "pid") != os.getpid()


def test_a_failing_step_process_reports_one_line(tmp_path):
    with pytest.raises(FleaInputError, match="missing.tsv"):
        run_in_own_process(partial(read_manifest, str(tmp_path / "missing.tsv")), "stage 9 manifest")
    with pytest.raises(FleaStepError, match="stage 9 crash: its process ended abruptly"):
        run_in_own_process(os.abort, "stage 9 crash")


def test_a_failed_training_is_a_step_error_naming_its_log(tmp_path):
    log = tmp_path / "train.log"
    with pytest.raises(FleaStepError, match=f"^stage 9 training: fairseq-hydra-train ser_attention_tiny failed \\(see {log}\\)"):
        run_in_own_process(partial(hydra_train, str(REPO_ROOT / "config" / "finetune"), "ser_attention_tiny", [
            f"task.data={tmp_path / 'missing'}", f"model.w2v_path={tmp_path / 'missing.pt'}",
            f"checkpoint.save_dir={tmp_path / 'run'}",
        ], str(log)), "stage 9 training")
    # fairseq's own output is in the training log, whose last lines the error quotes.
    assert "missing.pt: checkpoint not found" in log.read_text()


def test_stages_out_of_order_say_what_is_missing(iemocap_tree, released_stand_in, tmp_path):
    hubert, kmeans = released_stand_in
    base = ["../recipes/iemocap/run.py", "--iemocap", iemocap_tree.root, "--work-dir", tmp_path, "--hubert", hubert,
            "--hubert-kmeans", kmeans, "--folds", 1, *TINY]
    fresh = run_python_tool(*base, "--stage", 1)
    assert fresh.returncode == 1 and "Traceback" not in fresh.stderr
    assert fresh.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'data'}: no fold manifests yet; stage 0 writes them (--stage 0)")
    assert_succeeded(run_python_tool(*base, "--stop-stage", 0))
    dry = run_python_tool(*base, "--dry-run")
    assert_succeeded(dry)
    # 1 fold, 2 directions, 3 layers x 3 K, 2 poolings: each step once
    assert "123 of 123 steps would run (102 on GPUs); 0 are done" in dry.stdout
    assert re.search(r"\nrun +3 +1 +fold1/FM/L6_K50/cpt  <- fold1/FM/L6_K50/labels, fold1/tapt\n", dry.stdout)
    assert re.search(r"\nrun +2 +1 +fold1/MF/L9_features  <- fold1/MF/tapt_mean\n", dry.stdout)
    assert not (tmp_path / "fold1").exists() and not (tmp_path / "tapt_labels").exists()
    skipped_ahead = run_python_tool(*base, "--stage", 3)
    assert skipped_ahead.returncode == 1
    assert skipped_ahead.stderr.strip().splitlines()[-1] == (
        f"error: stage 3 fold 1 FM layer 6 K=50 CPT: {tmp_path / 'fold1' / 'FM' / 'L6_K50' / 'labels'} "
        "is missing; stage 2 (fold 1 FM layer 6 K=50 labels) makes it, run that first")


def processes_writing_to(path) -> list:
    """The processes with ``path`` open (the training and its loader workers, for its log)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd")):
                found.append(int(pid))
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


def is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def test_killing_the_recipe_ends_its_training(iemocap_tree, released_stand_in, tmp_path):
    hubert, kmeans = released_stand_in
    command = [sys.executable, str(REPO_ROOT / "recipes" / "iemocap" / "run.py"), "--iemocap", iemocap_tree.root,
               "--work-dir", str(tmp_path), "--hubert", str(hubert), "--hubert-kmeans", str(kmeans),
               "--tapt-label-layer", "1", "--folds", "1", "--tapt-config", "tapt_tiny", "--precision", "fp32",
               "--pretrain-overrides", "optimization.max_update=100000"]
    recipe = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        train_log = tmp_path / "fold1" / "tapt" / "train.log"
        training = []
        for _ in range(240):
            time.sleep(0.5)
            if train_log.exists() and "begin training epoch" in train_log.read_text():
                training = processes_writing_to(train_log)
                if training:
                    break
        assert training, "the recipe never started TAPT pretraining"
        recipe.kill()  # SIGKILL: the recipe cannot clean up after itself
        recipe.wait()
        for _ in range(60):
            if not any(map(is_running, training)):
                break
            time.sleep(0.5)
        else:
            for pid in filter(is_running, training):
                os.kill(pid, signal.SIGKILL)
            pytest.fail("the TAPT training went on after the recipe was killed")
    finally:  # a failed check must not leave a 100,000-update training behind: it ends with the recipe
        if recipe.poll() is None:
            recipe.kill()
            recipe.wait()
