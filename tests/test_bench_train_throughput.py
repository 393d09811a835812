"""bench/bench_train_throughput.py as a CPU smoke test: the tiny configs through the timed
fairseq-hydra-train, one row per phase with rates, counted FLOPs, the attention kernel and the
time outside the steps, and a fast_paths candidate. No timing is asserted; the GPU figures
need a GPU."""

import json
import re
import subprocess
import sys

from omegaconf import OmegaConf

from conftest import REPO_ROOT, run_bench

WITHOUT_FFT = "all,-fft-positional-conv"  # a fast_paths value, its comma quoted for hydra


def test_the_bench_times_both_phases_through_fairseq(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from bench_train_throughput import run_directory

    table = tmp_path / "throughput.md"
    run_bench("bench_train_throughput.py", "--device", "cpu", "--updates", "7", "--utterances", "16",
              "--candidates", WITHOUT_FFT, "--work-dir", str(tmp_path / "work"), "--table", str(table), timeout=600)
    rows = [line.strip("|").split("|") for line in table.read_text().splitlines() if line.startswith("| ")]
    header, *runs = [[cell.strip() for cell in row] for row in rows]
    by_run = {(row[0], row[2]): dict(zip(header, row)) for row in runs}
    # A fast_paths value runs as one more row per phase, on the phase's own field.
    candidate = f"{REPO_ROOT.name}+{WITHOUT_FFT}"
    assert set(by_run) == {(checkout, phase) for checkout in (REPO_ROOT.name, candidate)
                           for phase in ("pretraining", "finetuning")}
    for checkout, value in ((REPO_ROOT.name, "all"), (candidate, WITHOUT_FFT)):
        for phase, field in (("pretraining", "task"), ("finetuning", "model")):
            config = OmegaConf.load(tmp_path / "work" / run_directory(checkout) / "bf16" / phase / "checkpoints"
                                    / "hydra" / ".hydra" / "config.yaml")
            assert config[field].fast_paths == value, (checkout, phase)
            # The flop counter counts the positional convolution, not the FFTs that replace it.
            if checkout == candidate:
                assert (float(by_run[(candidate, phase)]["GFLOP per audio s"])
                        > float(by_run[(REPO_ROOT.name, phase)]["GFLOP per audio s"])), phase
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
    # and how much of it the training loop spent waiting for its next batch.
    assert re.search(r"within an epoch, of which [\d.]+ ms waiting for the next batch", table.read_text())
    # A validation's time, split into its steps and its waits for batches.
    assert re.search(r"a validation with batch shapes seen before: \d+ ms, of which \d+ ms in its steps, "
                     r"\d+ ms waiting for its first batch, .*the first validation \d+ ms more", table.read_text())
    # The start-up the recipe's trainings pay, forked with the imports done: less than a new process's.
    after_imports = [float(x) for x in re.findall(r"start-up after the imports \(as the recipe's trainings start\): ([\d.]+) s",
                                                  table.read_text())]
    assert len(after_imports) == len(by_run)
    assert all(0 < x < float(row["start-up (s)"]) for x, row in zip(after_imports, by_run.values()))
    # The bench's second pass over the first validation's batches is timed apart.
    record = json.loads((tmp_path / "work" / REPO_ROOT.name / "bf16" / "finetuning" / "times.json").read_text())
    assert len(record["warm_validation"]) == 1 and record["validations"][0][1] <= record["warm_validation"][0][0]
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


def test_a_validation_is_projected_by_the_samples_its_batches_compute_on():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import numpy as np
    from bench_train_throughput import validation_batches, validation_samples

    def config(max_tokens, batch_size):
        return {"dataset": {"max_tokens_valid": max_tokens, "batch_size_valid": batch_size},
                "task": {"max_sample_size": 250000}}

    spread = np.array([16000, 32000, 48000, 160000, 320000])
    # One batch: fine-tuning pads every utterance to the longest, pretraining crops to the shortest.
    assert validation_samples(spread, "finetuning", config(None, 64)) == 5 * 320000
    assert validation_samples(spread, "pretraining", config(None, 64)) == 5 * 16000
    # One utterance a batch: each computes on its own length (pretraining: at most max_sample_size).
    assert validation_samples(spread, "finetuning", config(None, 1)) == spread.sum()
    assert validation_samples(spread, "pretraining", config(None, 1)) == spread.sum() - (320000 - 250000)
    # max_tokens splits the utterances, longest first, as fairseq's datasets order them.
    assert validation_samples(spread, "finetuning", config(320000, 64)) == 320000 + 2 * 160000 + 2 * 32000
    # Above max_tokens: left out, as fairseq's skip_invalid_size_inputs_valid_test does.
    assert validation_samples(spread, "finetuning", config(200000, 64)) == 3 * 48000 + 160000
    # and the batches each validation's shapes come from
    assert validation_batches(spread, "finetuning", config(320000, 64)) == 3
    assert validation_batches(spread, "finetuning", config(200000, 64)) == 2


def test_the_wait_for_the_next_batch_is_told_from_the_rest_between_steps():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from bench_train_throughput import batch_waits_within_epochs, gaps_between_steps

    steps = [{"start": 0.0, "end": 1.0}, {"start": 1.010, "end": 2.0}, {"start": 2.5, "end": 3.0}]
    record = {"steps": steps, "validations": [], "warm_validation": [], "saves": [], "epochs": [{"end": 2.2}],
              # the loop's next() from 1.002 to 1.008; the one at 2.3 is across the epoch's end
              "batch_waits": [[1.002, 1.008], [2.3, 2.45]]}
    within, across = gaps_between_steps(record)
    assert [round(gap, 3) for gap in within] == [0.01] and [round(gap, 3) for gap in across] == [0.5]
    assert [round(wait, 3) for wait in batch_waits_within_epochs(record)] == [0.006]


def test_a_validation_is_split_into_what_it_spends_once_and_what_per_batch():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from bench_train_throughput import validation_parts, warm_validations

    record = {"validations": [[10.0, 10.5], [20.0, 20.3]],
              # the first validation waits 0.1 s for its first batch, 0.02 s for its second
              "valid_batch_waits": [[10.01, 10.01], [10.02, 10.12], [10.3, 10.32], [20.0, 20.05]],
              "valid_steps": [[10.15, 10.3], [10.32, 10.45], [20.1, 20.25]]}
    parts = validation_parts(record, record["validations"])
    assert round(parts.steps, 3) == 0.43
    assert round(parts.first_batch_waits, 3) == 0.15 and round(parts.later_batch_waits, 3) == 0.02
    assert round(parts.rest, 3) == 0.2  # set-up, logging
    assert round(parts.once_per_validation, 3) == 0.35 and round(parts.per_batch, 3) == 0.45
    assert parts.validations == 2

    # The first validation met new batch shapes; a second pass over its batches did not.
    warm_record = {"validations": [[10.0, 10.5], [20.0, 20.3]], "warm_validation": [[10.5, 10.8]]}
    warm, new_shapes = warm_validations(warm_record)
    assert warm == [[20.0, 20.3], [10.5, 10.8]] and round(new_shapes, 3) == 0.2
    # A run that never validated: none, no extra.
    assert warm_validations({"validations": [], "warm_validation": []}) == ([], 0.0)


def test_a_folds_epoch_is_projected_by_the_batches_fairseq_makes_of_it():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import numpy as np
    from bench_train_throughput import training_batches

    config = {"dataset": {"max_tokens": 400000, "batch_size": 3},
              "task": {"max_sample_size": 160000, "min_sample_size": 32000}}
    sizes = np.array([16000, 16000, 48000, 48000, 48000, 320000, 320000])
    # Fine-tuning: the two long ones count as 160000 and fit max_tokens together; the five
    # short ones go 3 and 2 to a batch (batch_size 3).
    assert training_batches(sizes, "finetuning", config) == 3
    # Pretraining also leaves out the two under min_sample_size.
    assert training_batches(sizes, "pretraining", config) == 2
    # Above max_tokens once counted: left out.
    uncapped = {"dataset": {"max_tokens": 300000, "batch_size": 3}, "task": {"max_sample_size": 500000}}
    assert training_batches(sizes, "finetuning", uncapped) == 2


def test_a_candidate_is_a_fast_paths_value_or_an_override():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from bench_train_throughput import candidate_overrides

    assert candidate_overrides("all,-fast-fft-sizes", "pretraining") == ['task.fast_paths="all,-fast-fft-sizes"']
    assert candidate_overrides("all+compiled-layers", "finetuning") == ['model.fast_paths="all+compiled-layers"']
    assert candidate_overrides("dataset.num_workers=8", "finetuning") == ["dataset.num_workers=8"]
    assert candidate_overrides("", "pretraining") == []


def test_an_unknown_fast_path_is_refused_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_train_throughput.py"), "--device", "cpu",
                             "--candidates", "all,-no-such-path", "--work-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    last = result.stderr.strip().splitlines()[-1]  # after what fairseq's import logs
    assert result.returncode == 2 and last.startswith("error: --candidates: unknown name "
                                                      "'-no-such-path'"), result.stderr
    assert not list(tmp_path.iterdir())  # refused before the corpus is written
