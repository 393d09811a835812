#!/usr/bin/env python3
"""The whole FLEA pipeline on a generated emotional-speech corpus, on CPU (what `make demo` runs).
Outputs under WORK_DIR (default demo/): demo_results.md (UA, WA, EDER and attention in span
per phase), the confusion matrices under recipe/fold4/.../eval_test/, the frame-level scores
and segments under .../eval_test_spans/ and attention_*.png. Re-running reuses finished steps."""

import argparse

from fairseq_flea.demo.flea_demo import DemoConfig, FleaDemo
from fairseq_flea.io.errors import log_tool_progress, run_tool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("work_dir", nargs="?", default="demo")
    parser.add_argument("--utterances-per-speaker", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    log_tool_progress()
    demo = FleaDemo(DemoConfig(work_dir=args.work_dir, utterances_per_speaker=args.utterances_per_speaker, seed=args.seed))
    table = demo.run()
    print("\nFLEA demo (a generated toy corpus, not IEMOCAP): test speaker of the held-out session\n")
    print(table)
    print(f"confusion matrices: {demo.recipe.work}/fold4/FM/*/eval_test/confusion.png and .../FM/L*_K*/*/eval_test/")
    print(f"EDER, attention in span and each utterance's segments: {demo.recipe.work}/fold4/FM/.../eval_test_spans/")
    print(f"attention over time of partial utterances, their known span shaded: {demo.work}/attention_*.png")


if __name__ == "__main__":
    run_tool(main)
