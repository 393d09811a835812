"""bench/bench_encoder_step.py as a CPU smoke test: each variant in its own process, one row
per phase and variant, the loss of fairseq's positional convolution equal to the current path's
to bf16 rounding, and fairseq's attention forward's and GELU's exactly, with more operators. No timing is
asserted; the GPU figures need a GPU."""

from conftest import run_bench


def test_the_bench_times_the_current_step_and_a_variant_in_both_phases(tmp_path):
    table = tmp_path / "encoder_step.md"
    run_bench("bench_encoder_step.py", "--device", "cpu", "--precision", "bf16",
              "--variants", "current", "conv-pos-conv", "fairseq-attention", "fairseq-gelu", "--steps", "1", "--table", str(table), timeout=600)
    rows = [line.strip("|").split("|") for line in table.read_text().splitlines() if line.startswith("| ")]
    header, *runs = [[cell.strip() for cell in row] for row in rows]
    runs = {(row[0], row[1]): dict(zip(header, row)) for row in runs}
    assert set(runs) == {(phase, variant) for phase in ("pretraining", "finetuning")
                         for variant in ("current", "conv-pos-conv", "fairseq-attention", "fairseq-gelu")}
    for row in runs.values():
        assert float(row["cold ms/step"]) > 0 and float(row["warm ms/step"]) > 0, row
        assert 0 < float(row["host ms/step (warm)"]) <= float(row["warm ms/step"]), row
        assert row["attention kernel"] == "CPU flash", row
        # bf16 rounding of the encoder's output, no more.
        assert float(row["Δ loss vs current (relative)"]) < 1e-2, row
    for phase in ("pretraining", "finetuning"):
        current, fairseqs = runs[(phase, "current")], runs[(phase, "fairseq-attention")]
        assert float(fairseqs["Δ loss vs current (relative)"]) == 0.0, fairseqs
        # The tiny encoder's 2 layers: fairseq's bias concatenation and mask handling, 7
        # operators a layer forward and backward.
        assert int(fairseqs["operators/step"]) - int(current["operators/step"]) == 14, (current, fairseqs)
        # fairseq's gelu: a copy to float32 and one back, forward and backward, in each layer.
        gelu = runs[(phase, "fairseq-gelu")]
        assert float(gelu["Δ loss vs current (relative)"]) == 0.0, gelu
        assert int(gelu["operators/step"]) - int(current["operators/step"]) == 8, (current, gelu)
