#!/usr/bin/env bash
# The budget table: first-order DARTS on the embedded digits set with and without the resource-aware
# penalty (parameters of the derived cells, docs/resource.md), 2 search seeds each at twice the demo's
# search epochs, through the selection protocol (a short training per seed, the better cell trained
# with the demo's training settings and tested once), then one `nas compare` table: test error beside
# the searched cells' cost ("Cell cost", in the search network's cells) and the trained networks' size.
#   bash benchmarks/budget_digits.sh [OUT_DIR]          (default runs/budget-digits)
#   TARGETS="0.005 0.02" bash benchmarks/budget_digits.sh   (budgets in M parameters; default 0.01 and 0.025)
set -euo pipefail
out=${1:-runs/budget-digits}
nas=${NAS:-nas}
read -r -a targets <<< "${TARGETS:-0.01 0.025}"
# budget_demo: the demo's first-order DARTS for 10 epochs, the cells' parameters measured
declare -A args=([no_penalty]="--preset budget_demo --set resource.weight=0")
rows=(no_penalty)
for t in "${targets[@]}"; do
  args[budget_$t]="--preset budget_demo --set resource.target=$t"
  rows+=("budget_$t")
done
for m in "${rows[@]}"; do
  if [ -f "$out/$m/genotype.json" ] && [ -d "$out/$m/final/run_0" ]; then continue; fi
  if [ -d "$out/$m" ]; then $nas select --resume "$out/$m" --no-progress
  else
    # shellcheck disable=SC2086  # the arguments above are word lists
    $nas select ${args[$m]} --seeds 2 --final --no-progress --out "$out/$m"
  fi
done
labels=("no penalty=$out/no_penalty")
for t in "${targets[@]}"; do labels+=("budget $t M params=$out/budget_$t"); done
$nas compare "${labels[@]}" --out "$out/comparison" --force
