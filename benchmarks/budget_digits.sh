#!/usr/bin/env bash
# The budget table: first-order DARTS on the embedded digits set with and without the resource-aware
# penalty (parameters of the derived cells, docs/resource.md), 2 search seeds each at twice the demo's
# search epochs, through the selection protocol (a short training per seed, the better cell trained
# with the demo's training settings and tested once), then one `nas compare` table: test error beside
# the searched cells' cost ("Cell cost", in the search network's cells) and the trained networks' size.
#   bash benchmarks/budget_digits.sh [OUT_DIR]          (default runs/budget-digits)
#   BUDGETS="0.005:1 0.02:0.3" bash benchmarks/budget_digits.sh   (rows as target:weight, targets in M parameters;
#                                      default "0.01:1 0.025:1 0.025:0.1")
set -euo pipefail
out=${1:-runs/budget-digits}
nas=${NAS:-nas}
read -r -a budgets <<< "${BUDGETS:-0.01:1 0.025:1 0.025:0.1}"
# budget_demo: the demo's first-order DARTS for 10 epochs, the cells' parameters measured
declare -A args=([no_penalty]="--preset budget_demo --set resource.weight=0")
rows=(no_penalty)
labels=("no penalty=$out/no_penalty")
for b in "${budgets[@]}"; do
  t=${b%%:*} w=${b##*:}
  args[budget_${t}_w$w]="--preset budget_demo --set resource.target=$t --set resource.weight=$w"
  rows+=("budget_${t}_w$w")
  labels+=("target $t M params, weight $w=$out/budget_${t}_w$w")
done
for m in "${rows[@]}"; do
  if [ -f "$out/$m/genotype.json" ] && [ -d "$out/$m/final/run_0" ]; then continue; fi
  if [ -d "$out/$m" ]; then $nas select --resume "$out/$m" --no-progress
  else
    # shellcheck disable=SC2086  # the arguments above are word lists
    $nas select ${args[$m]} --seeds 2 --final --no-progress --out "$out/$m"
  fi
done
$nas compare "${labels[@]}" --out "$out/comparison" --force
