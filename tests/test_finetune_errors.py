"""Bad input to emotion fine-tuning: one clear line naming the file, non-zero exit."""

import shutil

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

import fairseq_flea  # noqa: F401
from conftest import FINETUNE_CONFIG_DIR, run_hydra_train
from fairseq import tasks
from fairseq_flea.io.errors import FleaInputError
from test_pretraining_errors import assert_one_line_error


@pytest.fixture
def corpus_copy(emotion_corpus, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(emotion_corpus, copy)
    # The manifests name the original root; point them at the copy.
    for manifest in copy.glob("*.tsv"):
        lines = manifest.read_text().splitlines()
        manifest.write_text("\n".join([str(copy)] + lines[1:]) + "\n")
    return copy


def finetune_run(data, w2v_path, tmp_path):
    return run_hydra_train(
        FINETUNE_CONFIG_DIR,
        "ser_attention_tiny",
        [f"task.data={data}", f"model.w2v_path={w2v_path}", f"checkpoint.save_dir={tmp_path / 'run'}"],
    )


def load_split(data, split="valid"):
    cfg = OmegaConf.load(FINETUNE_CONFIG_DIR / "ser_attention_tiny.yaml")
    cfg.task.data = str(data)
    task = tasks.setup_task(cfg.task)
    task.load_dataset(split)
    return task


def test_label_not_in_dictionary_names_the_line(corpus_copy, scratch_run, tmp_path):
    labels = corpus_copy / "valid.emo"
    lines = labels.read_text().splitlines()
    lines[4] = "fru"
    labels.write_text("\n".join(lines) + "\n")
    result = finetune_run(corpus_copy, scratch_run[0], tmp_path)
    assert_one_line_error(result, str(labels), "line 5", "'fru'", "not in the label dictionary")


def test_label_and_manifest_counts_differ(corpus_copy):
    labels = corpus_copy / "valid.emo"
    labels.write_text("\n".join(labels.read_text().splitlines()[:-2]) + "\n")
    with pytest.raises(FleaInputError, match=r"valid.emo has 14 lines but .*valid.tsv lists 16"):
        load_split(corpus_copy)


@pytest.mark.parametrize(
    "write_bad, message",
    [
        (lambda path: sf.write(path, np.zeros(0, np.float32), 16000), "only 0 samples"),
        (lambda path: sf.write(path, np.zeros(16000, np.float32), 8000), "sample rate is 8000 Hz"),
    ],
    ids=["empty", "8 kHz"],
)
def test_bad_audio_is_named_before_training(corpus_copy, write_bad, message):
    manifest = (corpus_copy / "valid.tsv").read_text().splitlines()
    bad = corpus_copy / manifest[3].split("\t")[0]
    write_bad(bad)
    with pytest.raises(FleaInputError, match=message) as error:
        load_split(corpus_copy)
    assert str(bad) in str(error.value)


def test_missing_w2v_path(emotion_corpus, tmp_path):
    missing = tmp_path / "hubert_base_ls960.pt"
    assert_one_line_error(finetune_run(emotion_corpus, missing, tmp_path), str(missing), "checkpoint not found")


def test_w2v_path_that_is_not_hubert(emotion_corpus, attention_finetune, tmp_path):
    # A fine-tuned classifier is a real fairseq checkpoint, but not a HuBERT encoder.
    classifier, _ = attention_finetune
    assert_one_line_error(
        finetune_run(emotion_corpus, classifier, tmp_path), str(classifier), "not a HuBERT pretraining checkpoint"
    )


def test_normalisation_other_than_the_encoders_is_refused(emotion_corpus, scratch_run, tmp_path):
    result = run_hydra_train(FINETUNE_CONFIG_DIR, "ser_attention_tiny", [
        f"task.data={emotion_corpus}", f"model.w2v_path={scratch_run[0]}",
        f"checkpoint.save_dir={tmp_path / 'run'}", "task.normalize=true",
    ])
    assert_one_line_error(result, str(scratch_run[0]), "trained with task.normalize=false; set task.normalize=false")
