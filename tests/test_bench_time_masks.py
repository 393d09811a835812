"""bench/bench_time_masks.py as a CPU smoke test: both draws over the base configs' batch
shapes, the device's without waits, as many masked frames as fairseq's. No timing is asserted;
the GPU figures need a GPU."""

from conftest import run_bench, table_rows


def test_the_bench_times_both_draws_in_both_phases():
    result = run_bench("bench_time_masks.py", "--device", "cpu", "--batches", "3",
                       "--repeats", "2", timeout=300)
    rows = {(cells[0], cells[1]): cells[2:] for cells in table_rows(result.stdout, "pretraining", "finetuning")}
    assert set(rows) == {(phase, draw) for phase in ("pretraining", "finetuning") for draw in ("fairseq", "device")}
    for (phase, draw), (host_ms, ms, waits, masked) in rows.items():
        assert 0 < float(host_ms) <= float(ms) and float(masked) > 0
        assert (int(waits) == 0) == (draw == "device"), (phase, draw, waits)
