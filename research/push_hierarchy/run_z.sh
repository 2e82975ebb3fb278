#!/bin/bash
# §23: the higher level with a latent variable z (high_z.py), trained on the round-3 recipe's bags and weights,
# then in process on seeds 5120-5159 (two processes of 20): the shipped level, the z level at z = 0, and the same
# z level planned optimistically (min over 8 prior draws of z).
cd "$(dirname "$0")"
export PYTHONPATH=.
PY=../../.venv/bin/python
D=/work/data/hz
mkdir -p $D
. ./round3_bags.sh
$PY high_z.py --z-dim 4 --beta 0.05 -- $B $O --set time_budget_s=1500 --out $D/z4b05.pt --verbose > $D/train.log 2>&1 || exit 1
Z=$D/z4b05.pt
export OMP_NUM_THREADS=1
for S in 5120 5140; do
  nice -n 19 $PY eval_library.py --seed $S --episodes 20 --conditions "shipped,zero@$Z,optimistic@$Z" \
      --json results/z_$S.json > results/z_$S.log 2>&1 &
done
wait
