"""Bad input to continued pretraining: one clear line naming the file, non-zero exit."""

import shutil

import pytest
import torch

from conftest import PRETRAIN_CONFIG_DIR, run_hydra_train


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    matching = [line for line in result.stderr.splitlines() if all(f in line for f in fragments)]
    assert len(matching) == 1, result.stderr[-3000:]


@pytest.fixture
def broken_labels(tone_corpus, tmp_path):
    """A writable copy of the 11-class label directory."""
    label_dir = tmp_path / "labels"
    shutil.copytree(tone_corpus / "labels11", label_dir)
    return label_dir


def train_scratch(tone_corpus, label_dir, tmp_path, *extra):
    return run_hydra_train(
        PRETRAIN_CONFIG_DIR,
        "hubert_tiny",
        [
            f"task.data={tone_corpus / 'data'}",
            f"task.label_dir={label_dir}",
            f"checkpoint.save_dir={tmp_path / 'run'}",
            *extra,
        ],
    )


def continue_from(tone_corpus, init_from, tmp_path):
    return run_hydra_train(
        PRETRAIN_CONFIG_DIR,
        "flea_cpt_tiny",
        [
            f"task.data={tone_corpus / 'data'}",
            f"task.label_dir={tone_corpus / 'labels5'}",
            f"task.init_from={init_from}",
            f"checkpoint.save_dir={tmp_path / 'run'}",
        ],
    )


def test_label_file_with_fewer_lines_than_manifest(tone_corpus, broken_labels, tmp_path):
    labels = broken_labels / "train.km"
    labels.write_text("".join(labels.read_text().splitlines(keepends=True)[:-1]))
    result = train_scratch(tone_corpus, broken_labels, tmp_path)
    assert_one_line_error(result, str(labels), "23 lines", "train.tsv", "24 utterances")


def test_label_sequence_shorter_than_its_audio(tone_corpus, broken_labels, tmp_path):
    labels = broken_labels / "valid.km"
    lines = labels.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:20])
    labels.write_text("\n".join(lines) + "\n")
    result = train_scratch(tone_corpus, broken_labels, tmp_path)
    assert_one_line_error(result, str(labels), "line 3", "valid_002.wav", "20 labels")


def test_label_not_in_dictionary(tone_corpus, broken_labels, tmp_path):
    (broken_labels / "dict.km.txt").write_text("".join(f"{i} 1\n" for i in range(5)))
    result = train_scratch(tone_corpus, broken_labels, tmp_path)
    assert_one_line_error(result, "valid.km", "not in the label dictionary")


def test_missing_dictionary(tone_corpus, broken_labels, tmp_path):
    (broken_labels / "dict.km.txt").unlink()
    result = train_scratch(tone_corpus, broken_labels, tmp_path)
    assert_one_line_error(result, str(broken_labels / "dict.km.txt"), "not found")


def test_missing_init_from(tone_corpus, tmp_path):
    missing = tmp_path / "no_such_checkpoint.pt"
    assert_one_line_error(
        continue_from(tone_corpus, missing, tmp_path), str(missing), "checkpoint not found"
    )


def test_init_from_a_file_that_is_no_checkpoint(tone_corpus, tmp_path):
    garbage = tmp_path / "notes.pt"
    garbage.write_text("these are not weights\n")
    assert_one_line_error(
        continue_from(tone_corpus, garbage, tmp_path), str(garbage), "not a readable fairseq"
    )


def test_init_from_a_checkpoint_of_another_model(tone_corpus, scratch_run, tmp_path):
    # A complete fairseq checkpoint whose config names another model.
    state = torch.load(scratch_run[0], map_location="cpu")
    state["cfg"]["model"]["_name"] = "wav2vec2"
    other = tmp_path / "wav2vec2.pt"
    torch.save(state, other)
    assert_one_line_error(
        continue_from(tone_corpus, other, tmp_path),
        str(other),
        "not a HuBERT pretraining checkpoint",
        "'wav2vec2'",
    )


def test_init_from_with_other_normalisation_is_refused(tone_corpus, scratch_run, tmp_path):
    result = run_hydra_train(PRETRAIN_CONFIG_DIR, "tapt_tiny", [
        f"task.data={tone_corpus / 'data'}", f"task.label_dir={tone_corpus / 'labels11'}", "task.labels=[km]",
        f"task.init_from={scratch_run[0]}", f"checkpoint.save_dir={tmp_path / 'run'}", "task.normalize=true",
    ])
    assert_one_line_error(result, str(scratch_run[0]), "trained with task.normalize=false; set task.normalize=false")
