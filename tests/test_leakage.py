"""The leakage guard on the generated IEMOCAP folds: clean folds pass, planted leaks fail."""

import os
import shutil
from pathlib import Path

import pytest

from conftest import assert_succeeded, run_python_tool
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.corpus.iemocap import iemocap_speaker
from fairseq_flea.corpus.leakage import check_no_leakage, fold_held_out_manifests

FOLDS = range(1, 6)


def lines_of(path: Path):
    return path.read_text().splitlines()


def write_manifest(directory: Path, split: str, root: str, entries, speakers=None) -> Path:
    """A manifest of (relative path, num_samples) entries and, given speakers, its .spk file."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{split}.tsv").write_text("\n".join([root] + [f"{n}\t{s}" for n, s in entries]) + "\n")
    if speakers is not None:
        (directory / f"{split}.spk").write_text("".join(f"{speaker}\n" for speaker in speakers))
    return directory / f"{split}.tsv"


def test_every_training_manifest_of_every_fold_passes(iemocap_manifests):
    out_dir, _ = iemocap_manifests
    for fold in FOLDS:
        fold_dir = out_dir / f"fold{fold}"
        training = [fold_dir / "train.tsv", fold_dir / "pretrain" / "train.tsv", fold_dir / "pretrain" / "valid.tsv"]
        check_no_leakage([str(path) for path in training], fold_held_out_manifests(str(fold_dir)))
        check_no_leakage(
            [str(path) for path in training], fold_held_out_manifests(str(fold_dir)), speaker_of=iemocap_speaker
        )


def test_planted_test_utterance_is_caught_by_its_audio_path(iemocap_manifests, tmp_path):
    """The leaked line claims a training speaker and reaches the audio through a symbolic link."""
    fold_dir = iemocap_manifests[0] / "fold3"
    train, test = lines_of(fold_dir / "train.tsv"), lines_of(fold_dir / "test.tsv")
    linked_root = tmp_path / "linked_root"
    linked_root.symlink_to(train[0])
    leaked_name = test[5].split("\t")[0]
    entries = [line.split("\t") for line in train[1:]] + [test[5].split("\t")]
    speakers = lines_of(fold_dir / "train.spk") + ["Ses01F"]
    leaky = write_manifest(tmp_path / "leaky", "train", str(linked_root), entries, speakers)
    with pytest.raises(FleaInputError) as caught:
        check_no_leakage([str(leaky)], fold_held_out_manifests(str(fold_dir)))
    assert str(caught.value) == (
        f"leakage: {leaky}, line {len(train) + 1} trains on {leaked_name}, an utterance of the "
        f"held-out split {fold_dir / 'test.tsv'}"
    )


def test_planted_test_speaker_is_caught(iemocap_manifests, tmp_path):
    """Another copy of a test speaker's audio: a new file, so only the speaker gives it away."""
    fold_dir = iemocap_manifests[0] / "fold2"
    test = lines_of(fold_dir / "test.tsv")
    test_name, test_samples = test[1].split("\t")
    copied_name = "copies/" + os.path.basename(test_name)
    (tmp_path / "copies").mkdir()
    shutil.copy(os.path.join(test[0], test_name), tmp_path / copied_name)
    test_speaker = lines_of(fold_dir / "test.spk")[0]
    entries = [(copied_name, test_samples)]
    leaky = write_manifest(tmp_path / "leaky", "train", str(tmp_path), entries, [test_speaker])
    message = (
        f"leakage: {leaky}, line 2 ({copied_name}) is speaker {test_speaker}, a speaker of the "
        f"held-out split {fold_dir / 'test.tsv'}"
    )
    with pytest.raises(FleaInputError) as caught:
        check_no_leakage([str(fold_dir / "pretrain" / "train.tsv"), str(leaky)], fold_held_out_manifests(str(fold_dir)))
    assert str(caught.value) == message
    assert test_speaker == iemocap_speaker(test_name)

    no_speakers_file = write_manifest(tmp_path / "names_only", "train", str(tmp_path), entries)
    with pytest.raises(FleaInputError, match=f"is speaker {test_speaker}, a speaker of the held-out"):
        check_no_leakage([str(no_speakers_file)], fold_held_out_manifests(str(fold_dir)), speaker_of=iemocap_speaker)
    with pytest.raises(FleaInputError, match=rf"^{tmp_path / 'names_only' / 'train.spk'}: speaker file not found"):
        check_no_leakage([str(no_speakers_file)], fold_held_out_manifests(str(fold_dir)))


def test_validation_speaker_in_fine_tuning_data_is_caught(iemocap_manifests, tmp_path):
    fold_dir = iemocap_manifests[0] / "fold4"
    valid = lines_of(fold_dir / "valid.tsv")
    valid_speaker = lines_of(fold_dir / "valid.spk")[2]
    leaky = write_manifest(
        tmp_path / "leaky", "train", valid[0], [valid[3].split("\t")], ["Ses01M"]
    )
    with pytest.raises(FleaInputError, match=f"an utterance of the held-out split {fold_dir / 'valid.tsv'}$"):
        check_no_leakage([str(leaky)], fold_held_out_manifests(str(fold_dir)))
    leaky_speaker = write_manifest(
        tmp_path / "speaker", "train", str(tmp_path), [("any.wav", "1600")], [valid_speaker]
    )
    with pytest.raises(FleaInputError, match=f"speaker {valid_speaker}, a speaker of the held-out split {fold_dir / 'valid.tsv'}$"):
        check_no_leakage([str(leaky_speaker)], fold_held_out_manifests(str(fold_dir)))


def test_command_line_guard(iemocap_manifests, tmp_path):
    fold_dir = iemocap_manifests[0] / "fold1"
    clean = run_python_tool("check_leakage.py", str(fold_dir / "train.tsv"), "--fold-dir", str(fold_dir))
    assert_succeeded(clean)
    assert f"no leakage: {fold_dir / 'train.tsv'}" in clean.stdout

    test = lines_of(fold_dir / "test.tsv")
    leaky = write_manifest(tmp_path, "train", test[0], [test[1].split("\t")])
    result = run_python_tool(
        "check_leakage.py", str(leaky), "--held-out", str(fold_dir / "test.tsv"), "--iemocap-names"
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: leakage: {leaky}, line 2 trains on {test[1].split(chr(9))[0]}, an utterance of the "
        f"held-out split {fold_dir / 'test.tsv'}"
    ]
