#!/usr/bin/env bash
# GPU check of issue 27: training throughput, host syncs per step, evaluation at scale.
#
#   bash benchmarks/gpu_check.sh                 # CUDA, full sizes, about 8 minutes at most
#   bash benchmarks/gpu_check.sh --device cpu    # CPU, --tiny sizes (also: GPU_CHECK_DEVICE=cpu)
#
# Writes $OUT (default ./gpu_check_out): gpu_check.md (a summary row per part, then each part's
# table) and gpu_check.json (every part's JSON), plus each part's own folder and log. Each part
# runs under its own `timeout`; one that fails or times out is reported as such and the others
# still run. Environment: OUT, PYTHON (default: the repository's .venv, else python3),
# GPU_CHECK_DEVICE, and TRAIN_TIMEOUT / SYNC_TIMEOUT / EVAL_TIMEOUT in seconds.
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
device="${GPU_CHECK_DEVICE:-cuda}"
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="${2:-}"; shift 2 ;;
        --device=*) device="${1#--device=}"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (use --device cpu|cuda)" >&2; exit 2 ;;
    esac
done
case "$device" in
    cpu) size=(--tiny) ;;
    cuda) size=() ;;
    *) echo "gpu_check.sh: --device must be cpu or cuda, not '$device'" >&2; exit 2 ;;
esac
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
OUT="${OUT:-./gpu_check_out}"

# one line naming whatever is missing
missing=()
command -v timeout >/dev/null 2>&1 || missing+=("timeout (coreutils)")
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    missing+=("python ($PYTHON)")
else
    # one interpreter start: prints one name per line for what it cannot import or use
    while IFS= read -r name; do
        [ -n "$name" ] && missing+=("$name")
    done < <(PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" - "$device" <<'PY' 2>/dev/null
import importlib.util
import sys

names = ["torch", "torchvision", "PIL", "numpy", "pandas", "pytorch_lightning", "embedlab"]
absent = [n for n in names if importlib.util.find_spec(n) is None]
for n in absent:
    print(f"python module {n}")
if sys.argv[1] == "cuda" and "torch" not in absent:
    import torch

    if not torch.cuda.is_available():
        print("a CUDA device (torch.cuda.is_available() is False; use --device cpu)")
PY
)
fi
if [ ${#missing[@]} -gt 0 ]; then
    (IFS=','; echo "gpu_check.sh: missing: ${missing[*]}" | sed 's/,/, /g') >&2
    exit 3
fi

mkdir -p "$OUT"
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
results=()
run_part() {  # name, seconds, command...
    local name="$1" limit="$2"; shift 2
    local start end rc status
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    end=$(date +%s)
    case $rc in
        0) status=ok ;;
        124|137) status="timeout after ${limit}s" ;;
        *) status="failed (exit $rc, see $name.log)" ;;
    esac
    echo "gpu_check.sh: $name: $status ($((end - start)) s)"
    results+=("$name|$status|$((end - start))")
}

tt="$here/train_throughput.py"
run_part train "${TRAIN_TIMEOUT:-300}" "$PYTHON" "$tt" "${size[@]}" --device "$device" \
    --parts loader,model,e2e --out "$OUT/train"
run_part sync "${SYNC_TIMEOUT:-60}" "$PYTHON" "$tt" "${size[@]}" --device "$device" \
    --parts sync --out "$OUT/sync"
run_part eval "${EVAL_TIMEOUT:-100}" "$PYTHON" "$here/eval_scale.py" "${size[@]}" \
    --device "$device" --out "$OUT/eval"

"$PYTHON" - "$OUT" "$device" "${results[@]}" <<'PY'
import json
import sys
from pathlib import Path

out, device, parts = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
files = {"train": "train/train_throughput", "sync": "sync/train_throughput", "eval": "eval/eval_scale"}
summary = {"device": device, "parts": {}}
lines = ["## GPU check (issue 27)", "", "| part | status | seconds |", "|---|---|---:|"]
tables = []
for entry in parts:
    name, status, seconds = entry.split("|")
    lines.append(f"| {name} | {status} | {seconds} |")
    record = {"status": status, "seconds": int(seconds)}
    stem = out / files[name]
    if status == "ok" and stem.with_suffix(".json").is_file():
        record["result"] = json.loads(stem.with_suffix(".json").read_text())
        tables.append(stem.with_suffix(".md").read_text())
    summary["parts"][name] = record
(out / "gpu_check.md").write_text("\n".join(lines) + "\n\n" + "\n".join(tables))
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"gpu_check.sh: wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")
PY
for entry in "${results[@]}"; do
    case "$entry" in *"|ok|"*) ;; *) exit 1 ;; esac
done
