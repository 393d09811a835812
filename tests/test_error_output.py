"""A tool's failure is one `error:` line on stderr: no library logging or warnings above it."""

import pytest

from conftest import run_python_tool


@pytest.mark.parametrize("tool, make_args, fragments", [
    ("predict.py", lambda d: [d / "notes.txt", d / "notes.txt"], ["notes.txt: not a readable fairseq checkpoint"]),
    ("evaluate.py", lambda d: [d / "missing.pt", d, "test"], ["missing.pt: checkpoint not found"]),
    ("dump_feature.py", lambda d: [d, "train", d / "notes.txt", 1, 1, 0, d / "features"], ["train.tsv"]),
    ("convert_checkpoint.py", lambda d: ["encoder", d / "notes.txt", d / "out.pt"], ["notes.txt"]),
])
def test_the_error_line_is_all_that_stderr_says(tool, make_args, fragments, tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    result = run_python_tool(tool, *make_args(tmp_path))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    assert "weights_only" not in lines[0]
