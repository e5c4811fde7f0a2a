#!/usr/bin/env bash
# The model work of the FULL-size benchmarks on one CUDA GPU: generate every arm of every quality protocol and
# compute the likelihoods (cached under $MINORITY_CACHE_DIR), then time the methods (perf) on CUDA.
# The reference-based evaluation and the tables follow on any machine with the dataset:
#     scripts/reproduce_results.sh full      (same OUT, cache folder copied to ~/.cache/minority/features)
# Usage: scripts/gpu_generate.sh [OUT=outputs/benchmark-full]   (from the repository root)
# Three protocol streams share the GPU (the embedded models are small: one process leaves it mostly idle);
# perf runs alone at the end so that its timings are not disturbed. A file OUT/DONE-<protocol> marks each
# finished protocol; rerunning resumes (finished arms are reused).
set -uo pipefail
OUT="${1:-outputs/benchmark-full}"
M=(${MINORITY:-minority})
mkdir -p "$OUT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"

gen() {  # gen PROTOCOL ARGS...: generate-only, full size unless ARGS say otherwise
  local name=$1; shift
  [[ -f "$OUT/DONE-$name" ]] && return 0
  echo "[$(date +%T)] start $name"
  if "${M[@]}" benchmark "$name" --out "$OUT/$name" --device cuda --generate-only --resume "$@" \
      > "$OUT/$name.log" 2>&1; then
    touch "$OUT/DONE-$name"; echo "[$(date +%T)] done $name"
  else
    echo "[$(date +%T)] FAILED $name (see $OUT/$name.log)"; tail -20 "$OUT/$name.log"
  fi
}

( gen mp-table1 --batch-size 250 ) &
( gen mp-table2 --batch-size 250 ) &
( gen sgms-table1 --batch-size 500; gen mp-table3 --batch-size 160 ) &
wait
if [[ ! -f "$OUT/DONE-perf" ]]; then
  echo "[$(date +%T)] start perf"
  "${M[@]}" benchmark perf --out "$OUT/perf" --device cuda --max-batch 512 --overwrite > "$OUT/perf.log" 2>&1 \
    && touch "$OUT/DONE-perf" && echo "[$(date +%T)] done perf" || { echo "FAILED perf"; tail -20 "$OUT/perf.log"; }
fi
