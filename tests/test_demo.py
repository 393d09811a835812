"""The demo's pipeline (make demo) at a smaller size: every phase, the table, the pictures."""

import glob
import logging

import pytest

from fairseq_flea.demo.flea_demo import DemoConfig, FleaDemo

SMALL = dict(utterances_per_speaker=8, scratch_updates=10, pretrain_updates=4, finetune_epochs=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return FleaDemo(DemoConfig(work_dir=str(tmp_path_factory.mktemp("demo")), **SMALL))


def test_demo_runs_every_phase_and_reports_them(demo, caplog):
    with caplog.at_level(logging.INFO):
        table = demo.run()
    ran = [r.getMessage() for r in caplog.records if ": running ->" in r.getMessage()]
    for step in ("demo corpus", "stand-in HuBERT: pretraining from scratch", "TAPT pretraining",
                 "TAPT fine-tuning", "K=8 labels", "K=8 CPT", "mean fine-tuning", "attention fine-tuning",
                 "frame-level evaluation of FLEA, attention pooling"):
        assert any(step in message for message in ran), step
    rows = [line for line in table.splitlines() if line.startswith("| ") and "phase" not in line]
    assert [row.split("|")[1].strip() for row in rows] == [
        "TAPT, mean pooling", "FLEA, mean pooling", "FLEA, attention pooling"]
    for row in rows:
        ua, wa, n, eder = (float(cell) for cell in row.split("|")[2:6])
        assert 0 <= ua <= 100 and 0 <= wa <= 100 and n == 8  # the test speaker's utterances
        assert 0 <= eder <= 100
        in_span, uniform, partial = row.split("|")[6].replace("(", " ").replace(",", " ").split()[:3]
        assert 0 <= float(in_span) <= 1 and 0 < float(uniform) < 1 and partial == "3"  # one of each emotion
    confusion = demo.recipe.grid_dir(4, "FM", 1, 8) + "/attention/eval_test/confusion.png"
    with open(confusion, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    assert glob.glob(f"{demo.work}/attention_*.png"), "no attention-over-time picture of a partial utterance"


def test_second_run_reuses_every_step(demo, caplog):
    with caplog.at_level(logging.INFO):
        demo.run()
    assert not [r for r in caplog.records if ": running ->" in r.getMessage()]
