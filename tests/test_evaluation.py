"""tools/evaluate.py and the metrics behind it."""

import json

import numpy as np
import pytest

from conftest import run_python_tool
from fairseq_flea.inference.recognizer import EmotionRecognizer
from fairseq_flea.inference.segments import emotion_segments
from fairseq_flea.evaluation.metrics import classification_scores, confusion_matrix
from fairseq_flea.io.manifest import read_manifest
from test_frame_metrics import speechbrain_eder_module
from test_pretraining_errors import assert_one_line_error


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


# The results table on damaged evaluations -------------------------------------------------

GOOD_RESULTS = {"ua": 0.625, "wa": 0.5, "n": 16, "split": "/nowhere/fold1/FM/test", "labels": ["ang", "hap"]}


def write_work_dir(work_dir, damaged_text):
    """A recipe work dir with one sound evaluation (fold 1) and one damaged (fold 2)."""
    for fold, text in ((1, json.dumps(GOOD_RESULTS, indent=2)), (2, damaged_text)):
        results = work_dir / f"fold{fold}" / "FM" / "tapt_mean" / "eval_test" / "results.json"
        results.parent.mkdir(parents=True)
        results.write_text(text)
    return work_dir / "fold2" / "FM" / "tapt_mean" / "eval_test" / "results.json"


WHOLE = json.dumps({**GOOD_RESULTS, "ua": 0.75}, indent=2)
DAMAGES = {
    "truncated mid-write": (WHOLE[:len(WHOLE) // 2], "cut off after"),
    "empty": ("", "empty"),
    "no ua": (json.dumps({k: v for k, v in GOOD_RESULTS.items() if k != "ua"}), "no ua"),
    "no n or split": (json.dumps({"ua": 0.5, "wa": 0.5}), "no n, split"),
    "n not a count": (json.dumps({**GOOD_RESULTS, "n": "16"}), 'n is "16"'),
    "ua not a score": (json.dumps({**GOOD_RESULTS, "ua": 75.0}), "ua is 75.0, not a score"),
    "not an object": ("[0.5, 0.5]", "a JSON list"),
    "not JSON": ('{"ua": 0.5,, "wa": 0.5}', "not valid JSON"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_aggregate_results_names_a_damaged_results_file_in_one_line(damage, tmp_path):
    text, fragment = DAMAGES[damage]
    damaged = write_work_dir(tmp_path, text)
    result = run_python_tool("aggregate_results.py", tmp_path)
    assert result.returncode == 1, result.stdout[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {damaged}: {fragment}"), result.stderr
    assert "--skip-damaged" in lines[0]
    assert result.stdout == "" and not (tmp_path / "results.md").exists()  # never a table from half the files


def test_aggregate_results_can_leave_damaged_files_out_and_count_them(tmp_path):
    damaged = write_work_dir(tmp_path, WHOLE[:len(WHOLE) // 2])
    result = run_python_tool("aggregate_results.py", tmp_path, "--skip-damaged")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"warning: {damaged}: cut off after {len(WHOLE) // 2} bytes, its JSON never closed "
        "(a write that did not finish?); left out of the table"]
    table = (tmp_path / "results.md").read_text()
    assert table == result.stdout
    assert "| TAPT | - | 62.5 / 50.0 (1) |" in table  # fold 1 alone: nothing of the half file
    assert f"Left out: 1 damaged results.json (not counted above):\n\n- {damaged}: cut off" in table


# --- frame level: evaluate.py --spans ---------------------------------------------------------------

ZED_NAMES = {"ang": "angry", "hap": "happy", "neu": "neutral", "sad": "sad"}


def write_test_spans(emotion_corpus, path):
    """ZED-style spans for the test split: the emotion of six non-neutral utterances (two of
    each class) in their middle 40 % only (the rest neutral), the others and the neutral ones whole."""
    manifest = read_manifest(str(emotion_corpus / "test.tsv"))
    labels = (emotion_corpus / "test.emo").read_text().split()
    spans = {}
    for index, (name, samples, label) in enumerate(zip(manifest.names, manifest.num_samples, labels)):
        duration = samples / 16000
        start, end = (0.3 * duration, 0.7 * duration) if label != "neu" and index // 4 % 2 == 0 else (0.0, duration)
        spans[f"utt{index}"] = {"wav": "{data_root}/" + name, "duration": round(duration, 3),
                                "emotion": [{"emo": ZED_NAMES[label], "start": round(start, 3), "end": round(end, 3)}]}
    path.write_text(json.dumps(spans))
    return spans


def test_evaluate_spans_reports_eder_as_speechbrain_computes_it(attention_finetune, emotion_corpus, tmp_path):
    """EDER from the written segments, computed again by SpeechBrain's EDER (or, without it,
    by the overlap definition), agrees with results.json to 2e-3; the segments are those of
    the inference API; attention in span is the weight of the frames inside the span."""
    checkpoint, _ = attention_finetune
    spans = write_test_spans(emotion_corpus, tmp_path / "spans.json")
    result = run_python_tool("evaluate.py", checkpoint, emotion_corpus, "test", "--out-dir", tmp_path / "eval",
                             "--spans", tmp_path / "spans.json")
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["span_utterances"] == 16 and results["partial_span_utterances"] == 6
    assert results["neutral_label"] == "neu" and results["segment_options"]["median_frames"] == 5
    assert f"EDER {100 * results['eder']:.2f}" in result.stdout and "attention in span" in result.stdout
    written = json.loads((tmp_path / "eval" / "segments.json").read_text())
    assert set(written) == set(spans)

    eder_module = speechbrain_eder_module()
    recognizer = EmotionRecognizer.load(str(checkpoint))
    manifest = read_manifest(str(emotion_corpus / "test.tsv"))
    paths = [f"{manifest.root}/{name}" for name in manifest.names]
    api = recognizer.predict_files(paths)
    independent, in_span, uniform = [], [], []
    for index, (path, prediction) in enumerate(zip(paths, api)):
        utterance = written[f"utt{index}"]
        segments = utterance["segments"]
        assert segments == [s.as_dict() for s in emotion_segments(
            prediction.frame_logits, prediction.duration, recognizer.class_names, recognizer.frame_timing)]
        event = spans[f"utt{index}"]["emotion"][0]
        duration = prediction.duration
        grid = 0.0025
        centres = (np.arange(int(np.ceil(duration / grid))) + 0.5) * grid
        on_grid = [next(s["emo"] for s in segments if s["end"] > t or s is segments[-1])[0] for t in centres]
        if eder_module is not None:
            independent.append(eder_module.EDER(on_grid, path, duration, [event], grid, grid))
        else:  # 1 - agreeing time / duration, neutral ('n') outside the event
            truth = ["n" if not event["start"] <= t < event["end"] else event["emo"][0] for t in centres]
            independent.append(1 - grid * sum(a == b for a, b in zip(on_grid, truth)) / duration)
        if event["end"] - event["start"] < duration - 0.1:
            frame_centres = np.arange(len(prediction.frame_weights)) * 0.02 + 0.0125
            inside = (frame_centres >= event["start"]) & (frame_centres < event["end"])
            in_span.append(prediction.frame_weights[inside].sum())
            uniform.append(inside.mean())
    assert abs(np.mean(independent) - results["eder"]) < 2e-3
    assert len(in_span) == 6
    assert abs(np.mean(in_span) - results["attention_in_span"]) < 0.02
    assert abs(np.mean(uniform) - results["uniform_in_span"]) < 0.02


def test_bad_spans_get_one_error_line_naming_the_utterance(attention_finetune, emotion_corpus, tmp_path):
    spans = write_test_spans(emotion_corpus, tmp_path / "spans.json")
    spans["elsewhere_7"] = {**spans["utt0"], "wav": "other/corpus_007.wav"}
    (tmp_path / "spans.json").write_text(json.dumps(spans))
    result = run_python_tool("evaluate.py", attention_finetune[0], emotion_corpus, "test", "--out-dir", tmp_path / "eval",
                             "--spans", tmp_path / "spans.json")
    assert_one_line_error(result, "error:", "spans.json: utterance elsewhere_7: no audio file called 'corpus_007'")
    assert not (tmp_path / "eval" / "results.json").exists()


def test_results_table_gains_frame_level_columns_and_the_paired_comparison(tmp_path):
    """With --spans evaluations the table has EDER and attention in span; every FLEA row is
    paired against TAPT over the same runs: mean difference, bootstrap interval, Wilcoxon p."""
    from fairseq_flea.evaluation.results_table import write_results_table

    for fold in range(1, 4):
        for direction in ("FM", "MF"):
            for model, ua in (("tapt_mean", 0.60), ("L9_K50/attention", 0.62 + 0.01 * fold)):
                out = tmp_path / f"fold{fold}" / direction / model / "eval_test"
                out.mkdir(parents=True)
                (out / "results.json").write_text(json.dumps({
                    "ua": ua, "wa": ua, "n": 100, "split": str(tmp_path / "x" / "test"),
                    "eder": 0.4, "attention_in_span": 0.5, "uniform_in_span": 0.4}))
    table = write_results_table(str(tmp_path))
    assert "| TAPT, mean | 6 | 40.0 ± 0.0 | 0.50 ± 0.00 | 0.40 ± 0.00 |" in table
    paired = next(line for line in table.splitlines() if line.startswith("| L9 K50, attention | 6 | +4.0 |"))
    assert paired.endswith("| 0.0312 |")  # six positive differences: 2 / 2**6
    assert "| TAPT, mean | 1 | FM | ? | - | 60.0 | 60.0 | 100 | 40.0 | 0.50 (0.40) |" in table
