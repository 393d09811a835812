"""bench/bench_positional_conv.py as a CPU smoke test: both FFT sizes over the base configs'
batch shapes, the same outputs to float32 rounding. No timing is asserted; the GPU figures
need a GPU."""

from conftest import run_bench, table_rows


def test_the_bench_times_both_fft_sizes_in_both_phases():
    result = run_bench("bench_positional_conv.py", "--device", "cpu", "--batches", "2",
                       "--passes", "1", timeout=300)
    rows = {cells[0]: cells[1:] for cells in table_rows(result.stdout, "pretraining", "finetuning")}
    assert set(rows) == {"pretraining", "finetuning"}
    for batches, awkward, *milliseconds, faster, difference in rows.values():
        assert int(batches) == 2 and 0 <= int(awkward) <= 2
        assert all(float(ms) > 0 for ms in milliseconds) and faster.endswith("x")
        assert float(difference) < 1e-5  # float32 rounding, not a different result
