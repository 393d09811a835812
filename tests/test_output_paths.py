"""Output locations a tool cannot write are refused before any work, in one line, and a
failed write leaves no `.partial` behind (the atomic writer checks and cleans up)."""

import pytest

from conftest import run_python_tool
from fairseq_flea.io.atomic_files import atomic_outputs, check_output_directory, check_output_paths
from fairseq_flea.io.errors import FleaInputError

UNWRITABLE = "/proc/flea-output-check"  # no directory can be made there, even by root


def assert_refused(result, *fragments):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


def no_partials(root):
    return [str(path) for path in root.rglob("*.partial")] == []


@pytest.mark.parametrize("tool, make_args, fragments", [
    ("convert_checkpoint.py", lambda d: ["encoder", d / "missing.pt", d / "a_dir"],
     ["a_dir: is a directory; the output is a file"]),
    ("predict.py", lambda d: [d / "missing.pt", d / "x.wav", "--json", d / "a_dir"], ["a_dir: is a directory"]),
    ("predict.py", lambda d: [d / "missing.pt", d / "x.wav", "--plot", d / "a_file" / "plots"],
     ["plots:", "a_file is a file, so no directory can be made there"]),
    ("evaluate.py", lambda d: [d / "missing.pt", d, "test", "--out-dir", d / "a_file" / "eval"], ["a_file is a file"]),
    ("dump_feature.py", lambda d: [d, "train", d / "missing.pt", 1, 1, 0, d / "a_file"], ["a_file is a file"]),
    ("dump_mfcc_feature.py", lambda d: [d, "train", 1, 0, UNWRITABLE], [UNWRITABLE, "cannot write there"]),
    ("learn_kmeans.py", lambda d: [d, "train", 1, d / "a_dir", 4], ["a_dir: is a directory"]),
    ("dump_km_label.py", lambda d: [d, "train", d / "km.bin", 1, 0, d / "a_file"], ["a_file is a file"]),
    ("merge_km_labels.py", lambda d: [UNWRITABLE, "train", 1, d / "km.bin"], [UNWRITABLE]),
    ("prepare_corpus.py", lambda d: [d / "corpus.csv", d / "a_file"], ["a_file is a file"]),
    ("make_demo_corpus.py", lambda d: [d / "a_file" / "demo"], ["a_file is a file"]),
])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tool, make_args, fragments, tmp_path):
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("a file where a directory is asked for\n")
    # the inputs are missing too: the output check comes first, so its error is the one shown
    assert_refused(run_python_tool(tool, *make_args(tmp_path)), *fragments)
    assert no_partials(tmp_path)


def test_the_checks_accept_writable_places_and_leave_nothing_behind(tmp_path):
    check_output_directory(str(tmp_path / "new" / "deeper"))
    check_output_paths(str(tmp_path / "other" / "model.bin"), str(tmp_path / "existing.txt"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FleaInputError, match="is a directory"):
        check_output_paths(str(tmp_path))


def test_a_write_that_fails_at_the_rename_leaves_no_partial_and_says_so(tmp_path):
    target = tmp_path / "labels.km"
    with pytest.raises(FleaInputError, match="labels.km: cannot be written"):
        with atomic_outputs(str(target)) as (partial,):
            with open(partial, "w") as output:
                output.write("0 1 2\n")
            target.mkdir()  # something else took the name while the work ran
    assert no_partials(tmp_path) and target.is_dir()


def test_a_block_that_fails_leaves_neither_output_nor_partial(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_outputs(str(tmp_path / "a.npy"), str(tmp_path / "a.len")) as partials:
            for partial in partials:
                open(partial, "w").close()
            raise RuntimeError("the work failed")
    assert list(tmp_path.iterdir()) == []
