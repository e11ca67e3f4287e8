#!/usr/bin/env bash
# The collapse table: DARTS (first and second order) and the methods against collapse on the embedded
# digits set, 2 search seeds each at twice its demo preset's search epochs (DARTS: 10; P-DARTS runs its
# own three-stage demo schedule; `darts_1st_pruned` is darts_1st with scheduled op pruning), through the selection protocol (a short training per seed, the better
# cell trained with the demo's training settings and tested once), then one `nas compare` table whose
# "parameter-free ops" column counts the weightless ops (pooling, skip, none) in the normal cell each
# search derived: the number DARTS's collapse drives up.
#   bash benchmarks/collapse_digits.sh [OUT_DIR]         (default runs/collapse-digits)
#   METHODS="darts_1st sdarts_rs" bash benchmarks/collapse_digits.sh   (some rows only; the table
#                                                        is written once every row is there)
set -euo pipefail
out=${1:-runs/collapse-digits}
nas=${NAS:-nas}
epochs=10
declare -A args=(
  [darts_1st]="--preset demo --optimizer darts_1st --set search.epochs=$epochs"
  [darts_2nd]="--preset demo --set search.epochs=$epochs"
  [darts_minus]="--preset darts_minus_demo --set search.epochs=$epochs"
  [sdarts_rs]="--preset sdarts_rs_demo --set search.epochs=$epochs"
  [sdarts_adv]="--preset sdarts_adv_demo --set search.epochs=$epochs"
  [darts_es]="--preset robust_darts_demo --set search.epochs=$epochs"
  [darts_pt]="--preset darts_pt_demo --set search.epochs=$epochs"
  [pdarts]="--preset pdarts_demo"
  [snas]="--preset snas_demo --set search.epochs=24"
  [reinmax]="--preset reinmax_demo --set search.epochs=60"
  [oles]="--preset oles_demo --set search.epochs=$epochs"
  [lambda_darts]="--preset lambda_darts_demo --set search.epochs=$epochs"
  [darts_1st_pruned]="--preset demo --optimizer darts_1st --set search.epochs=$epochs --set op_pruning.after=[3,6] --set op_pruning.keep=[4,2]"
)
all=(darts_1st darts_2nd darts_minus sdarts_rs sdarts_adv darts_es darts_pt pdarts snas reinmax oles lambda_darts
     darts_1st_pruned)
read -r -a methods <<< "${METHODS:-${all[*]}}"
for m in "${methods[@]}"; do
  [ -n "${args[$m]:-}" ] || { echo "unknown method $m; choose from: ${all[*]}" >&2; exit 2; }
  if [ -f "$out/$m/genotype.json" ] && [ -d "$out/$m/final/run_0" ]; then continue; fi
  if [ -d "$out/$m" ]; then $nas select --resume "$out/$m" --no-progress
  else
    # shellcheck disable=SC2086  # the arguments above are word lists
    $nas select ${args[$m]} --seeds 2 --final --no-progress --out "$out/$m"
  fi
done
for m in "${all[@]}"; do [ -d "$out/$m/final/run_0" ] || exit 0; done
$nas compare $(for m in "${all[@]}"; do echo "$m=$out/$m"; done) --out "$out/comparison" --force
