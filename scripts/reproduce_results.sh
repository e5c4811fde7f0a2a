#!/usr/bin/env bash
# The exact commands behind docs/results/ and the quality numbers in the README, at the sizes that fit a 2-core
# CPU machine in one session (each process pinned to one thread so that two can run side by side; the full
# protocol sizes are in docs/results/README.md).
# Usage: scripts/reproduce_results.sh [sd|ddpm|all|full]   (run from the repository root after `make setup`)
#   full: the FULL-size protocols (docs/results/*-full), after scripts/gpu_generate.sh has done the model work
#   (generation + likelihood) on a CUDA machine into outputs/benchmark-full with its cache copied to
#   ~/.cache/minority/features; this part only evaluates against the references and writes the tables.
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
M=".venv/bin/minority"
part="${1:-all}"

if [[ "$part" == full ]]; then
  F=outputs/benchmark-full
  $M benchmark mp-table1 --out $F/mp-table1 --resume --threads 1 --batch-size 250
  $M benchmark mp-table2 --out $F/mp-table2 --resume --threads 1 --batch-size 250
  $M benchmark mp-table3 --out $F/mp-table3 --resume --threads 1 --batch-size 160
  $M benchmark sgms-table1 --out $F/sgms-table1 --resume --threads 1 --batch-size 500
  exit 0
fi

if [[ "$part" == sd || "$part" == all ]]; then
  $M quality fashion-sd --seeds 20 --batch-size 50 --real-sizes 200,5000 --out outputs/quality/fashion-sd
  $M quality fashion-sd --seeds 20 --batch-size 50 --real-sizes 200,5000 --guidance 7.5 --out outputs/quality/fashion-sd-w7.5
  # MP Tab. 1: 10 prompts x 10 seeds (full protocol: 50 seeds); PF-ODE tolerance 1e-4 (default 1e-5) for CPU time
  $M benchmark mp-table1 --seeds 10 --batch-size 50 --threads 1 --set likelihood_rtol=1e-4 --set likelihood_atol=1e-4 \
      --out outputs/benchmark/mp-table1 --resume
  # MP Tab. 2: 10 prompts x 3 seeds (full: 50)
  $M benchmark mp-table2 --seeds 3 --batch-size 50 --threads 1 --set likelihood_rtol=1e-4 --set likelihood_atol=1e-4 \
      --out outputs/benchmark/mp-table2 --resume
  # ... and at 10 prompts x 10 seeds, the six arms split over two processes (run side by side)
  for arms in "ddim,proposed,+all (Eq. 6)" "+tweedie_cfg,+stop_grad_second,+cv_in_second"; do
    tag=$([[ "$arms" == ddim* ]] && echo a || echo b)
    $M benchmark mp-table2 --seeds 10 --batch-size 50 --threads 1 --set likelihood_rtol=1e-4 --set likelihood_atol=1e-4 \
        --methods "$arms" --out "outputs/benchmark/mp-table2-s10-$tag"
  done
fi

if [[ "$part" == ddpm || "$part" == all ]]; then
  $M quality fashion-ddpm --seeds 20 --batch-size 50 --real-sizes 200,5000 --out outputs/quality/fashion-ddpm
  # SGMS Tab. 1: 10 classes x 10 seeds, 50 steps (full: 100 seeds, 250 steps); reference: the first 5,000
  # training images (quality metrics against their 10% most unique by AvgkNN)
  $M benchmark sgms-table1 --seeds 10 --steps 50 --batch-size 50 --threads 1 \
      --reference fashion-mnist:train:limit=5000 --out outputs/benchmark/sgms-table1 --resume
  # MP Tab. 3: 10 prompts x 8 seeds (full: 16)
  $M benchmark mp-table3 --seeds 8 --batch-size 32 --threads 1 --out outputs/benchmark/mp-table3 --resume
fi
