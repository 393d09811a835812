"""In a run of one process, fairseq's trainer does not read the first batch again before each
epoch and validation (tasks.dummy_batches); runs of several processes still do
(test_distributed.py trains 2 processes on a validation set of fewer batches than processes)."""

import pytest
from fairseq import tasks
from omegaconf import OmegaConf

import fairseq_flea  # noqa: F401
from fairseq_flea.hubert.fast_path_names import parse_fast_paths
from conftest import FINETUNE_CONFIG_DIR, PRETRAIN_CONFIG_DIR


def task_config(kind: str, emotion_corpus, tone_corpus):
    if kind == "classification":
        cfg = OmegaConf.load(FINETUNE_CONFIG_DIR / "ser_attention_tiny.yaml")
        cfg.task.data = str(emotion_corpus)
    else:
        cfg = OmegaConf.load(PRETRAIN_CONFIG_DIR / "hubert_tiny.yaml")
        cfg.task.data, cfg.task.label_dir = str(tone_corpus / "data"), str(tone_corpus / "labels11")
        cfg.task.labels = ["km"]
    return cfg


@pytest.mark.parametrize("kind", ["classification", "pretraining"])
@pytest.mark.parametrize("read_dummy_batch", [False, True])
def test_the_first_batch_is_read_again_only_when_asked(kind, read_dummy_batch, emotion_corpus, tone_corpus):
    cfg = task_config(kind, emotion_corpus, tone_corpus)
    fast_paths = "all,-dummy-batch-from-step" if read_dummy_batch else "all"
    if kind == "pretraining":
        cfg.task.fast_paths = fast_paths
    task = tasks.setup_task(cfg.task)
    if kind == "classification":  # the task takes its model's fast_paths when it builds the model
        task.fast_paths = parse_fast_paths(fast_paths)
    for split in ("train", "valid"):
        task.load_dataset(split)
        iterator = task.get_batch_iterator(task.dataset(split), max_tokens=cfg.dataset.max_tokens,
                                           max_sentences=cfg.dataset.get("batch_size"), num_workers=0)
        if read_dummy_batch:
            assert iterator.first_batch["net_input"]["source"].numel() > 0  # fairseq's read
        else:
            assert iterator.first_batch == "DUMMY"  # the trainer keeps the first batch a step prepares
        # The same dataset otherwise: its batches are what the loader delivers either way.
        assert len(list(iterator.next_epoch_itr())) > 0
