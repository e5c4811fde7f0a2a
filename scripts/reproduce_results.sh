#!/usr/bin/env bash
# The commands behind docs/results/ and the quality numbers in the README, at the sizes that fit a 2-core CPU
# machine in one session (each process pinned to one thread so that two can run side by side).
# Usage: scripts/reproduce_results.sh [sd|ddpm|all]   (run from the repository root after `make setup`)
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
M=".venv/bin/minority"
part="${1:-all}"

if [[ "$part" == sd || "$part" == all ]]; then
  $M quality fashion-sd --seeds 20 --batch-size 50 --real-sizes 200,5000 --out outputs/quality/fashion-sd
  # MP Tab. 1: 10 prompts x 10 seeds (full protocol: 50 seeds); PF-ODE tolerance 1e-4 (default 1e-5) for CPU time
  $M benchmark mp-table1 --seeds 10 --batch-size 50 --threads 1 --set likelihood_rtol=1e-4 --set likelihood_atol=1e-4 \
      --out outputs/benchmark/mp-table1 --resume
  # MP Tab. 3 at its full size: 10 prompts x 16 seeds
  $M benchmark mp-table3 --batch-size 32 --threads 1 --out outputs/benchmark/mp-table3 --resume
  # MP Tab. 2: 10 prompts x 5 seeds (full: 50)
  $M benchmark mp-table2 --seeds 5 --batch-size 50 --threads 1 --set likelihood_rtol=1e-4 --set likelihood_atol=1e-4 \
      --out outputs/benchmark/mp-table2 --resume
fi

if [[ "$part" == ddpm || "$part" == all ]]; then
  $M quality fashion-ddpm --seeds 20 --batch-size 50 --real-sizes 200,5000 --out outputs/quality/fashion-ddpm
  # SGMS Tab. 1: 10 classes x 10 seeds, 100 steps (full: 100 seeds, 250 steps); reference: the first 5,000
  # training images (quality metrics against their 10% most unique by AvgkNN)
  $M benchmark sgms-table1 --seeds 10 --steps 100 --batch-size 50 --threads 1 \
      --reference fashion-mnist:train:limit=5000 --out outputs/benchmark/sgms-table1 --resume
fi
