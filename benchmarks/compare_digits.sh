#!/usr/bin/env bash
# Every search method on the embedded digits set, the demo budget, 2 search seeds each (the
# selection protocol: a short training per seed, the better cell trained with the demo's training
# settings and tested once), then one table. Digits is far too easy to rank methods: this shows
# that every method runs end to end and what it costs, not which is best. On CIFAR-10 use the
# *_paper presets with --dataset cifar10 --data-root DIR (GPU days).
#   bash benchmarks/compare_digits.sh [OUT_DIR]          (default runs/compare-digits)
set -euo pipefail
out=${1:-runs/compare-digits}
nas=${NAS:-nas}
common=(--seeds 2 --final --no-progress)
run() {  # label, then the nas select arguments
  local label=$1; shift
  if [ -f "$out/$label/genotype.json" ] && [ -d "$out/$label/final" ]; then return; fi
  if [ -d "$out/$label" ]; then $nas select --resume "$out/$label" --no-progress; else
    $nas select "$@" "${common[@]}" --out "$out/$label"; fi
}
run darts_1st --preset demo --optimizer darts_1st
run darts_2nd --preset demo
run gdas --preset gdas_demo
run fairdarts --preset fairdarts_demo
if [ ! -d "$out/random/final" ]; then
  $nas random --samples 4 --final --no-progress --out "$out/random"
fi
run pcdarts --preset pcdarts_demo
run drnas --preset drnas_demo
methods=(darts_1st darts_2nd pcdarts gdas drnas fairdarts random)
$nas compare $(for m in "${methods[@]}"; do echo "$m=$out/$m"; done) --out "$out/comparison" --force
