#!/usr/bin/env bash
# The training-throughput checks BENCHMARKS.md still lists as "not measured on a GPU", in one
# run that fits ten minutes of one GPU (HuBERT-base size, bf16). Each part has its own time
# limit, so a slow part leaves the others their time, and its results reach OUT_DIR as soon
# as it ends:
#
#   machine.txt        the GPU, driver, torch, CPU cores and the commit measured
#   pretraining.md     TAPT: the current code (fast_paths all), then with
#                      dataset.data_buffer_size=0 (no fairseq buffer thread),
#                      dataset.num_workers=8, and the fast_paths values all+expandable-segments,
#                      all,-padding-known-on-host (attention asks the GPU whether a batch is
#                      padded), all+compiled-layers (last: it compiles first)
#   finetuning.md      fine-tuning: the current code, REFERENCE_CHECKOUT (an older copy of
#                      the project, e.g. from `git worktree add`), all,-padding-known-on-host,
#                      all+expandable-segments, all,-fast-fft-sizes (FFTs as long as the
#                      input), all,-gelu-in-input-dtype (fairseq's GELU)
#   NAME.log           what each part printed (console.log: everything)
#   runs/              each training's times.json, train.log and profile (no checkpoints)
#
#   bash bench/gpu_throughput_checks.sh OUT_DIR [REFERENCE_CHECKOUT [REFERENCE_NAME]]
#   DEVICE=cpu bash bench/gpu_throughput_checks.sh OUT_DIR   # rehearsal: tiny, a few steps each
#
# Environment: PYTHON (default python3), DEVICE (cuda), FLEA_COMMIT (default: git's HEAD),
# LIMIT_PRETRAINING / LIMIT_FINETUNING (seconds per part; the defaults add up to 545 s on a
# GPU, 10 minutes each in the CPU rehearsal). A part out of time keeps the rows it finished.
# Exits non-zero if any part failed or ran out of time; the other parts still run.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 ]]; then
    echo "usage: $0 OUT_DIR [REFERENCE_CHECKOUT [REFERENCE_NAME]]" >&2
    exit 2
fi
out=$(mkdir -p "$1" && cd "$1" && pwd)
reference=${2:-}
reference_name=${3:-$(basename "${reference:-none}")}
if [[ -n $reference && ! -f $reference/bench/bench_train_throughput.py ]]; then
    echo "error: $reference: not a copy of the project (no bench/bench_train_throughput.py)" >&2
    exit 2
fi
python=${PYTHON:-python3}
device=${DEVICE:-cuda}
work=$(mktemp -d -t flea_gpu_throughput.XXXXXX)
trap 'rm -rf "$work"' EXIT
failed=()

exec > >(tee -a "$out/console.log") 2>&1

keep_records() {  # the small files of a part's trainings, not its checkpoints or audio
    local part=$1
    [[ -d $work/$part ]] || return 0
    (cd "$work/$part" && find . -type f \( -name times.json -o -name train.log -o -name profile.txt \) \
        -exec cp --parents {} "$out/runs/$part/" \;) 2>/dev/null || true
}

run_part() {  # NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2 started=$SECONDS status
    shift 2
    mkdir -p "$out/runs/$name"
    echo "== $name (at most ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    status=${PIPESTATUS[0]}
    keep_records "$name"
    if [[ $status -ne 0 ]]; then
        [[ $status -eq 124 || $status -eq 137 ]] && echo "== $name: out of time after ${limit} s"
        failed+=("$name (exit $status)")
    fi
    echo "== $name: $((SECONDS - started)) s, exit $status"
}

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit: ${FLEA_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
    echo "reference: ${reference:-none} ($reference_name)"
    echo "cpu cores: $(nproc)"
    if [[ $device == cuda ]]; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    fi
    "$python" -c 'import platform, torch; print(f"python {platform.python_version()}, torch {torch.__version__}, cuda {torch.version.cuda}")'
} > "$out/machine.txt"
cat "$out/machine.txt"

# The rehearsal runs every part at its smallest; on a GPU each bench's own defaults hold.
if [[ $device == cuda ]]; then
    limits=(285 260) small_throughput=()
else
    limits=(600 600) small_throughput=(--updates 6 --utterances 12)
fi
throughput=("$python" bench/bench_train_throughput.py --device "$device" "${small_throughput[@]}")

run_part pretraining "${LIMIT_PRETRAINING:-${limits[0]}}" "${throughput[@]}" --phases pretraining --names now \
    --candidates dataset.data_buffer_size=0 dataset.num_workers=8 all+expandable-segments \
    all,-padding-known-on-host all+compiled-layers \
    --work-dir "$work/pretraining" --table "$out/pretraining.md"

checkouts=(--checkouts . --names now)
[[ -n $reference ]] && checkouts=(--checkouts . "$reference" --names now "$reference_name")
run_part finetuning "${LIMIT_FINETUNING:-${limits[1]}}" "${throughput[@]}" --phases finetuning "${checkouts[@]}" \
    --candidates all,-padding-known-on-host all+expandable-segments all,-fast-fft-sizes all,-gelu-in-input-dtype \
    --work-dir "$work/finetuning" --table "$out/finetuning.md"

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all parts done; results in $out"
