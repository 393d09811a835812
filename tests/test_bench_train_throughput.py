"""bench/bench_train_throughput.py as a CPU smoke test: the tiny configs through the timed
fairseq-hydra-train, one row per phase with rates, counted FLOPs, the attention kernel and the
time outside the steps. No timing is asserted; the GPU figures need a GPU."""

import re
import subprocess
import sys

from omegaconf import OmegaConf

from conftest import REPO_ROOT, assert_succeeded

CLIP = "optimization.clip_norm=5.0"  # a config change, as a candidate


def test_the_bench_times_both_phases_through_fairseq(tmp_path):
    table = tmp_path / "throughput.md"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "bench_train_throughput.py"), "--device", "cpu",
         "--updates", "7", "--utterances", "16", "--candidates", f"conv-pos-conv+{CLIP}", "--work-dir", str(tmp_path / "work"), "--table", str(table)],
        capture_output=True, text=True, timeout=600,
    )
    assert_succeeded(result)
    rows = [line.strip("|").split("|") for line in table.read_text().splitlines() if line.startswith("| ")]
    header, *runs = [[cell.strip() for cell in row] for row in rows]
    by_run = {(row[0], row[2]): dict(zip(header, row)) for row in runs}
    # A change to the training path and the config runs as one more row per phase.
    candidate = f"{REPO_ROOT.name}+conv-pos-conv+{CLIP}"
    assert set(by_run) == {(checkout, phase) for checkout in (REPO_ROOT.name, candidate)
                           for phase in ("pretraining", "finetuning")}
    for checkout, clip_norm in ((REPO_ROOT.name, 0.0), (candidate, 5.0)):  # ser_attention_tiny: 0, no clipping
        config = OmegaConf.load(tmp_path / "work" / checkout.replace("=", "-") / "bf16" / "finetuning" / "checkpoints" / "hydra" / ".hydra" / "config.yaml")
        assert config.optimization.clip_norm == clip_norm
    for row in by_run.values():
        assert float(row["updates/s"]) > 0 and float(row["audio s/s"]) > 0, row
        # HuBERT needs tens of MFLOP per audio second even at the tiny size; none is a counter that missed.
        assert float(row["GFLOP per audio s"]) > 0.01, row
        assert row["attention kernel"] not in ("", "-"), row
        assert float(row["start-up (s)"]) > 0 and float(row["in steps (s)"]) > 0, row
        assert 0 < float(row["outside steps %"]) < 100, row
        assert row["validation (s, n)"].endswith(")") and not row["validation (s, n)"].endswith("(0)"), row
    # The profiled step says where its time went, by fairseq's own parts of a step, and its
    # operator table is kept beside the run.
    assert "profiled step: forward and backward" in table.read_text()
    # Where the waiting between steps is: within epochs, or where an epoch ends.
    assert re.search(r"between steps \(validation and saving left out\): .*mean [\d.]+ ms at \d+ epoch end", table.read_text())
    # fairseq's length buckets cropped to their shortest member keep most, never all, of the audio.
    kept = re.search(r"keep ([\d.]+) % of an IEMOCAP-like fold's audio", table.read_text())
    assert kept and 50 < float(kept.group(1)) < 100
    assert (tmp_path / "work" / REPO_ROOT.name / "bf16" / "pretraining" / "profile.txt").stat().st_size > 0


def test_rates_are_taken_after_the_first_epoch_where_every_batch_shape_was_seen():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from bench_train_throughput import STEADY_AT_LEAST, steady_steps

    def steps(count: int, start: float, seconds: float) -> list:
        return [{"start": start + i, "end": start + i + seconds, "audio_seconds": 10.0} for i in range(count)]

    first, later = steps(4, 0.0, 0.5), steps(STEADY_AT_LEAST, 10.0, 0.05)
    record = {"steps": first + later, "epochs": [{"end": 4.0}, {"end": 30.0}]}
    assert steady_steps(record) == (later, first)
    # Too few steps after the first epoch: from the step after the warm-up on, first epoch included.
    record = {"steps": first + later[:3], "epochs": [{"end": 4.0}, {"end": 30.0}]}
    steady, first_epoch = steady_steps(record)
    assert steady == (first + later[:3])[3:] and first_epoch == []
