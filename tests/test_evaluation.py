"""tools/evaluate.py and the metrics behind it."""

import json

import numpy as np
import pytest

from conftest import run_python_tool
from fairseq_flea.inference.recognizer import EmotionRecognizer
from fairseq_flea.evaluation.metrics import classification_scores, confusion_matrix


def test_scores_match_a_hand_computed_confusion_matrix():
    # 10 utterances, classes 0..3:
    #   class 0: 4 utterances, 3 right            recall 3/4
    #   class 1: 2 utterances, 1 right            recall 1/2
    #   class 2: 3 utterances, 3 right            recall 3/3
    #   class 3: 1 utterance,  0 right (-> 0)     recall 0/1
    true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 3]
    predicted = [0, 0, 0, 2, 1, 0, 2, 2, 2, 0]
    confusion = confusion_matrix(true, predicted, 4)
    assert confusion.tolist() == [[3, 0, 1, 0], [1, 1, 0, 0], [0, 0, 3, 0], [1, 0, 0, 0]]
    scores = classification_scores(true, predicted, 4)
    assert scores["wa"] == pytest.approx(7 / 10)
    assert scores["ua"] == pytest.approx((3 / 4 + 1 / 2 + 1 + 0) / 4)
    assert scores["per_class_recall"] == pytest.approx([0.75, 0.5, 1.0, 0.0])
    # F1 per class: 2*3/(4+5), 2*1/(2+1), 2*3/(3+4), 0
    assert scores["macro_f1"] == pytest.approx((6 / 9 + 2 / 3 + 6 / 7 + 0) / 4)
    assert scores["n"] == 10


def test_a_class_absent_from_the_split_does_not_count_in_ua():
    scores = classification_scores([0, 0, 1], [0, 1, 1], 3)
    assert scores["per_class_recall"][2] is None
    assert scores["ua"] == pytest.approx((0.5 + 1.0) / 2)


def test_evaluate_tool_writes_consistent_results(attention_finetune, emotion_corpus, tmp_path):
    checkpoint, _ = attention_finetune
    result = run_python_tool("evaluate.py", checkpoint, emotion_corpus, "test", "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"ua", "wa", "per_class_recall", "confusion", "labels", "n", "macro_f1"} <= set(results)
    rows = [line.split("\t") for line in (tmp_path / "predictions.tsv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    assert header[:3] == ["utterance", "true", "predicted"] and len(rows) == results["n"] == 16
    # The scores are those of the written predictions ...
    labels = results["labels"]
    confusion = confusion_matrix([labels.index(r[1]) for r in rows], [labels.index(r[2]) for r in rows], len(labels))
    assert confusion.tolist() == results["confusion"]
    assert results["wa"] == pytest.approx(np.trace(confusion) / 16)
    # ... and the predictions those of the inference API on the same files.
    recognizer = EmotionRecognizer.load(str(checkpoint))
    manifest_lines = (emotion_corpus / "test.tsv").read_text().splitlines()
    paths = [f"{manifest_lines[0]}/{line.split(chr(9))[0]}" for line in manifest_lines[1:]]
    api = recognizer.predict_files(paths)
    assert [r[2] for r in rows] == [recognizer.class_names[p.predicted_index()] for p in api]
    assert np.abs(np.array([[float(x) for x in r[3:]] for r in rows]) - np.stack([p.probabilities for p in api])).max() < 1e-5
    png = (tmp_path / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "UA" in result.stdout
