#!/bin/bash
# §24: §23's z level with a conditional prior p(z | s, m) (high_z.py --conditional-prior), same recipe, then in
# process on seeds 5160-5183 (two processes of 12): the shipped level, the z level scored by its expected cost over
# 8 draws of the prior, and by its cheapest draw.
cd "$(dirname "$0")"
export PYTHONPATH=.
PY=../../.venv/bin/python
D=/work/data/hz
mkdir -p $D
. ./round3_bags.sh
$PY high_z.py --z-dim 4 --beta 0.05 --conditional-prior -- $B $O --set time_budget_s=1500 --out $D/z4b05cp.pt \
    --verbose > $D/train_cp.log 2>&1 || exit 1
Z=$D/z4b05cp.pt
export OMP_NUM_THREADS=1
for S in 5160 5172; do
  nice -n 19 $PY eval_library.py --seed $S --episodes 12 --conditions "shipped,expected@$Z,optimistic@$Z" \
      --json results/zcp_$S.json > results/zcp_$S.log 2>&1 &
done
wait
