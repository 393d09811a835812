"""Phase 0: IEMOCAP and CSV corpora -> leakage-free fold manifests, on generated trees."""

import json
import os
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
import soundfile as sf

from conftest import assert_succeeded, run_python_tool
from fairseq_flea.corpus.csv_corpus import prepare_corpus
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.corpus.iemocap import iemocap_speaker, prepare_iemocap
from fairseq_flea.io.manifest import read_label_lines, read_manifest
from iemocap_tree import GeneratedUtterance, IemocapTree

FOUR_CLASSES = {"ang": "ang", "hap": "hap", "exc": "hap", "neu": "neu", "sad": "sad"}
SESSIONS = range(1, 6)


def read_split(directory: Path, split: str) -> Dict[str, Tuple[Optional[str], str, int]]:
    """Absolute wav path -> (label or None where the split has no .emo, speaker, num_samples)."""
    manifest = read_manifest(str(directory / f"{split}.tsv"))
    speakers = read_label_lines(str(directory / f"{split}.spk"), manifest)
    labels = (
        read_label_lines(str(directory / f"{split}.emo"), manifest)
        if (directory / f"{split}.emo").exists()
        else [None] * len(manifest)
    )
    return {
        os.path.join(manifest.root, name): (label, speaker, samples)
        for name, label, speaker, samples in zip(manifest.names, labels, speakers, manifest.num_samples)
    }


def expected_split(utterances: List[GeneratedUtterance], class_map=FOUR_CLASSES):
    return {
        u.wav_path: (class_map[u.label], u.speaker, u.num_samples)
        for u in utterances
        if u.label in class_map
    }


def snapshot(directory: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def tree_copy(iemocap_tree, tmp_path):
    """A writable copy of the generated tree, with the generator's record re-rooted."""
    root = tmp_path / "IEMOCAP_full_release"
    shutil.copytree(iemocap_tree.root, root)
    return IemocapTree(
        root=str(root),
        utterances=[
            replace(u, wav_path=str(root / os.path.relpath(u.wav_path, iemocap_tree.root)))
            for u in iemocap_tree.utterances
        ],
    )


def test_all_utterances_per_class_and_session(iemocap_tree, iemocap_manifests):
    out_dir, _ = iemocap_manifests
    expected = expected_split(iemocap_tree.utterances)
    assert read_split(out_dir, "all") == expected
    assert Counter(read_label_lines(str(out_dir / "all.emo"), read_manifest(str(out_dir / "all.tsv")))) == Counter(
        label for label, *_ in expected.values()
    )
    report = json.loads((out_dir / "counts.json").read_text())
    kept = [u for u in iemocap_tree.utterances if u.label in FOUR_CLASSES]
    assert report["counts"] == {
        f"Session{s}": {
            c: sum(1 for u in kept if u.session == s and FOUR_CLASSES[u.label] == c) for c in ["ang", "hap", "neu", "sad"]
        }
        for s in SESSIONS
    }
    assert report["labels_left_out"] == dict(
        Counter(u.label for u in iemocap_tree.utterances if u.label not in FOUR_CLASSES)
    )
    assert report["skipped"] == []


def test_folds_leave_one_session_out(iemocap_tree, iemocap_manifests):
    out_dir, _ = iemocap_manifests
    for fold in SESSIONS:
        fold_dir = out_dir / f"fold{fold}"
        splits = {split: read_split(fold_dir, split) for split in ("train", "valid", "test")}
        assert splits["train"] == expected_split([u for u in iemocap_tree.utterances if u.session != fold])
        assert splits["valid"] == expected_split([u for u in iemocap_tree.utterances if u.speaker == f"Ses0{fold}F"])
        assert splits["test"] == expected_split([u for u in iemocap_tree.utterances if u.speaker == f"Ses0{fold}M"])
        assert all(splits[split] for split in splits)
        paths = [set(split) for split in splits.values()]
        assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
        assert read_manifest(str(fold_dir / "test.tsv")).root == iemocap_tree.root
        train_counts = Counter(label for label, *_ in splits["train"].values())
        assert (fold_dir / "dict.emo.txt").read_text() == "".join(
            f"{label} {train_counts[label]}\n" for label in ["ang", "hap", "neu", "sad"]
        )


def test_speaker_is_the_suffix_gender_not_the_dialog_gender(iemocap_tree, iemocap_manifests):
    out_dir, _ = iemocap_manifests
    crossed = [
        u for u in iemocap_tree.utterances if u.label in FOUR_CLASSES and u.dialog[5] != u.name[-4]
    ]
    assert crossed, "the generated tree must hold utterances whose dialog gender differs"
    for u in crossed:
        split = "valid" if u.name[-4] == "F" else "test"
        assert read_split(out_dir / f"fold{u.session}", split)[u.wav_path][1] == u.speaker
    assert iemocap_speaker("Ses03M_impro05b_F001") == "Ses03F"
    assert iemocap_speaker("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M003.wav") == "Ses01M"


def test_pretrain_splits_come_from_training_sessions_only(iemocap_tree, iemocap_manifests):
    out_dir, _ = iemocap_manifests
    for fold in SESSIONS:
        pretrain_dir = out_dir / f"fold{fold}" / "pretrain"
        train, valid = read_split(pretrain_dir, "train"), read_split(pretrain_dir, "valid")
        expected_train = expected_split([u for u in iemocap_tree.utterances if u.session != fold])
        assert not set(train) & set(valid)
        assert {**train, **valid}.keys() == expected_train.keys()
        assert len(valid) == max(1, round(0.05 * len(expected_train)))
        assert not (pretrain_dir / "train.emo").exists()


def test_deviation_from_the_published_counts_is_reported(iemocap_tree, iemocap_manifests):
    out_dir, result = iemocap_manifests
    report = json.loads((out_dir / "counts.json").read_text())
    total = sum(1 for u in iemocap_tree.utterances if u.label in FOUR_CLASSES)
    assert report["total"] == total
    assert {"count": "total", "found": total, "expected": 5531, "difference": total - 5531} in report["deviations"]
    assert len(report["deviations"]) == 4 + 5 + 1
    assert "WARNING: counts differ from the complete IEMOCAP release" in result.stdout
    assert re.search(rf"^total +{total} +5531 +{total - 5531:+d}$", result.stdout, re.MULTILINE)
    assert "session" in result.stdout and "Session3" in result.stdout


def test_rerun_writes_identical_files(iemocap_tree, iemocap_manifests, tmp_path):
    out_dir, _ = iemocap_manifests
    rerun_dir = tmp_path / "rerun"
    shutil.copytree(out_dir, rerun_dir)
    prepare_iemocap(iemocap_tree.root, str(rerun_dir), pretrain_valid_fraction=0.05)
    assert snapshot(rerun_dir) == snapshot(out_dir)
    assert not list(rerun_dir.rglob("*.tmp"))


def test_male_validation_speaker_and_six_classes(iemocap_tree, tmp_path):
    prepare_iemocap(iemocap_tree.root, str(tmp_path), class_map_spec="6", valid_gender="M")
    six_classes = {label: label for label in ["ang", "hap", "exc", "neu", "sad", "fru"]}
    assert read_split(tmp_path / "fold2", "valid") == expected_split(
        [u for u in iemocap_tree.utterances if u.speaker == "Ses02M"], six_classes
    )
    assert read_split(tmp_path / "fold2", "test") == expected_split(
        [u for u in iemocap_tree.utterances if u.speaker == "Ses02F"], six_classes
    )
    dictionary = (tmp_path / "fold2" / "dict.emo.txt").read_text().split()
    assert dictionary[::2] == sorted(six_classes)
    report = json.loads((tmp_path / "counts.json").read_text())
    assert "deviations" not in report


def test_missing_unreadable_and_8khz_wavs_are_listed_and_skipped(tree_copy, tmp_path, caplog):
    kept = [u for u in tree_copy.utterances if u.label in FOUR_CLASSES]
    missing, unreadable, wrong_rate = kept[0], kept[7], kept[13]
    os.remove(missing.wav_path)
    Path(unreadable.wav_path).write_bytes(b"RIFF but not really a wav file")
    sf.write(wrong_rate.wav_path, np.zeros(800, dtype=np.float32), 8000)
    out_dir = tmp_path / "out"
    with caplog.at_level("WARNING"):
        report = prepare_iemocap(tree_copy.root, str(out_dir))
    reasons = {item["path"]: item["reason"] for item in report["skipped"]}
    assert reasons[missing.wav_path] == "audio file not found"
    assert reasons[unreadable.wav_path].startswith("unreadable")
    assert reasons[wrong_rate.wav_path] == "sample rate is 8000 Hz, the model expects 16000 Hz"
    assert len(reasons) == 3
    for u in (missing, unreadable, wrong_rate):
        assert f"skipped {u.wav_path}" in caplog.text
    assert read_split(out_dir, "all").keys() == {u.wav_path for u in kept} - {
        missing.wav_path, unreadable.wav_path, wrong_rate.wav_path
    }
    assert report["total"] == len(kept) - 3


def test_stereo_and_sub_frame_wavs_are_skipped_as_training_would_refuse_them(tree_copy, tmp_path):
    kept = [u for u in tree_copy.utterances if u.label in FOUR_CLASSES]
    stereo, too_short = kept[2], kept[9]
    sf.write(stereo.wav_path, np.zeros((16000, 2), dtype=np.float32), 16000)
    sf.write(too_short.wav_path, np.zeros(399, dtype=np.float32), 16000)
    report = prepare_iemocap(tree_copy.root, str(tmp_path / "out"))
    reasons = {item["path"]: item["reason"] for item in report["skipped"]}
    assert reasons == {
        stereo.wav_path: "has 2 channels, expected mono audio",
        too_short.wav_path: "only 399 samples, shorter than one frame (400 samples)",
    }


def test_root_that_is_not_iemocap(tmp_path):
    (tmp_path / "corpus" / "wavs").mkdir(parents=True)
    result = run_python_tool("prepare_iemocap.py", str(tmp_path / "corpus"), str(tmp_path / "out"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {tmp_path / 'corpus'} does not look like IEMOCAP: expected Session1 to Session5, each "
        "with dialog/EmoEvaluation/<dialog>.txt and sentences/wav/<dialog>/<utterance>.wav"
    ]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "all.tsv").exists()


def test_parent_of_the_release_gets_a_hint(iemocap_tree):
    with pytest.raises(FleaInputError, match=f"did you mean {iemocap_tree.root}"):
        prepare_iemocap(os.path.dirname(iemocap_tree.root), "unused")


def test_emo_evaluation_line_that_does_not_parse(tree_copy, tmp_path):
    label_file = tree_copy.label_file(2, "Ses02M_script01_1")
    lines = Path(label_file).read_text().splitlines()
    broken_line = next(n for n, line in enumerate(lines, start=1) if line.startswith("[") and n > 10)
    lines[broken_line - 1] = lines[broken_line - 1].replace("\t", " ", 1).replace("]", "", 1)
    Path(label_file).write_text("\n".join(lines) + "\n")
    with pytest.raises(FleaInputError, match=rf"^{label_file}, line {broken_line}: expected '\[start - end\]"):
        prepare_iemocap(tree_copy.root, str(tmp_path / "out"))


def test_missing_session(tree_copy, tmp_path):
    shutil.rmtree(os.path.join(tree_copy.root, "Session4"))
    with pytest.raises(FleaInputError, match=f"^{tree_copy.root}: Session4 is missing"):
        prepare_iemocap(tree_copy.root, str(tmp_path / "out"))


def test_session_whose_validation_speaker_has_no_usable_audio(tree_copy, tmp_path):
    for u in tree_copy.utterances:
        if u.speaker == "Ses05F":
            os.remove(u.wav_path)
    with pytest.raises(FleaInputError, match=r"^Session5: .* speakers \['Ses05M'\]"):
        prepare_iemocap(tree_copy.root, str(tmp_path / "out"))


# ---------------------------------------------------------------- any corpus, as CSV


def write_csv_corpus(directory: Path, speakers_of_group: Dict[str, List[str]], with_groups: bool = True):
    """Three utterances per speaker, labels cycling over three classes; returns the rows written."""
    rng = np.random.default_rng(1)
    rows = []
    for group, speakers in speakers_of_group.items():
        for speaker in speakers:
            for index in range(3):
                relative = f"audio/{speaker}/{index}.wav"
                (directory / relative).parent.mkdir(parents=True, exist_ok=True)
                num_samples = int(rng.integers(3200, 4800))
                sf.write(directory / relative, 0.1 * rng.standard_normal(num_samples), 16000)
                label = ["calm", "angry", "happy"][(index + len(rows)) % 3]
                rows.append(
                    {"path": relative, "wav": str(directory / relative), "label": label,
                     "speaker": speaker, "group": group, "num_samples": num_samples}
                )
    columns = ["path", "label", "speaker"] + (["group"] if with_groups else [])
    lines = [",".join(columns)] + [",".join(row[c] for c in columns) for row in rows]
    (directory / "corpus.csv").write_text("\n".join(lines) + "\n")
    return rows


def csv_expected(rows, speakers):
    return {
        row["wav"]: (row["label"], row["speaker"], row["num_samples"])
        for row in rows
        if row["speaker"] in speakers
    }


def test_csv_corpus_leaves_one_group_out(tmp_path):
    speakers_of_group = {"studioA": ["ann", "bob"], "studioB": ["cat", "dan", "eve"], "studioC": ["fay", "gus"]}
    rows = write_csv_corpus(tmp_path, speakers_of_group)
    out_dir = tmp_path / "out"
    result = run_python_tool("prepare_corpus.py", str(tmp_path / "corpus.csv"), str(out_dir), "--pretrain-splits")
    assert_succeeded(result)
    all_speakers = [s for speakers in speakers_of_group.values() for s in speakers]
    for fold, group in enumerate(sorted(speakers_of_group), start=1):
        held_out = sorted(speakers_of_group[group])
        valid, test = held_out[: len(held_out) // 2], held_out[len(held_out) // 2 :]
        fold_dir = out_dir / f"fold{fold}"
        assert read_manifest(str(fold_dir / "train.tsv")).root == str(tmp_path / "audio")
        assert read_split(fold_dir, "train") == csv_expected(rows, set(all_speakers) - set(held_out))
        assert read_split(fold_dir, "valid") == csv_expected(rows, valid)
        assert read_split(fold_dir, "test") == csv_expected(rows, test)
        assert (fold_dir / "dict.emo.txt").read_text().split()[::2] == ["angry", "calm", "happy"]
        pretrain_speakers = set((fold_dir / "pretrain" / "train.spk").read_text().split())
        assert pretrain_speakers and not pretrain_speakers & set(held_out)
    report = json.loads((out_dir / "counts.json").read_text())
    assert report["folds"][1]["valid_speakers"] == ["cat"]
    assert report["folds"][1]["test_speakers"] == ["dan", "eve"]
    assert "deviations" not in report


def test_csv_corpus_without_groups_folds_over_speaker_sets(tmp_path):
    speakers = [f"spk{index}" for index in range(6)]
    rows = write_csv_corpus(tmp_path, {"": speakers}, with_groups=False)
    out_dir = tmp_path / "out"
    report = prepare_corpus(str(tmp_path / "corpus.csv"), str(out_dir), num_folds=3)
    assert [fold["valid_speakers"] + fold["test_speakers"] for fold in report["folds"]] == [
        ["spk0", "spk3"], ["spk1", "spk4"], ["spk2", "spk5"]
    ]
    assert read_split(out_dir / "fold2", "test") == csv_expected(rows, {"spk4"})
    assert read_split(out_dir / "fold2", "train") == csv_expected(rows, {"spk0", "spk3", "spk2", "spk5"})
    with pytest.raises(FleaInputError, match="6 speakers cannot make 4 folds"):
        prepare_corpus(str(tmp_path / "corpus.csv"), str(out_dir), num_folds=4)


def test_csv_bad_rows_and_unreadable_wav(tmp_path):
    rows = write_csv_corpus(tmp_path, {"g1": ["ann", "bob"], "g2": ["cat", "dan"]})
    csv_path = tmp_path / "corpus.csv"
    good = csv_path.read_text()

    csv_path.write_text(good + "audio/extra.wav,calm,ann\n")
    with pytest.raises(FleaInputError, match=rf"^{csv_path}, line {len(rows) + 2}: expected 4 non-empty fields path,label,speaker,group \(as on line 2\)"):
        prepare_corpus(str(csv_path), str(tmp_path / "out"))

    csv_path.write_text(good + "audio/extra.wav,calm,ann,g2\n")
    with pytest.raises(FleaInputError, match=rf"line {len(rows) + 2}: speaker ann is in group g2 here"):
        prepare_corpus(str(csv_path), str(tmp_path / "out"))

    csv_path.write_text(good + f"{rows[0]['path']},calm,ann,g1\n")
    with pytest.raises(FleaInputError, match=rf"line {len(rows) + 2}: {rows[0]['path']} is listed twice \(first on line 2\)"):
        prepare_corpus(str(csv_path), str(tmp_path / "out"))

    csv_path.write_text(good)
    (tmp_path / rows[4]["path"]).write_bytes(b"not audio")
    report = prepare_corpus(str(csv_path), str(tmp_path / "out"))
    assert [item["path"] for item in report["skipped"]] == [rows[4]["wav"]]
    assert rows[4]["wav"] not in read_split(tmp_path / "out", "all")
    assert report["total"] == len(rows) - 1
