#!/bin/bash
# §23: the higher level with a latent variable z (high_z.py), trained on the round-3 recipe's bags and weights,
# then in process on seeds 5120-5159 (two processes of 20): the shipped level, the z level at z = 0, and the same
# z level planned optimistically (min over 8 prior draws of z).
cd "$(dirname "$0")"
export PYTHONPATH=.
PY=../../.venv/bin/python
D=/work/data/hz
mkdir -p $D
B="--bag /work/data/play_contact_7000 --bag /work/data/play_contact_7100 --bag /work/data/play230/play_contact_7200 --bag /work/data/play230/play_contact_7300 --bag /work/data/play230/play_contact_7400"
O="--bag /work/data/own2/own_push_9000 --weight /work/data/own2/own_push_9000=5 --bag /work/data/own3/own_push_9040 --weight /work/data/own3/own_push_9040=5 --bag /work/data/own4/own_push_9080 --weight /work/data/own4/own_push_9080=5"
$PY high_z.py --z-dim 4 --beta 0.05 -- $B $O --set time_budget_s=1500 --out $D/z4b05.pt --verbose > $D/train.log 2>&1 || exit 1
Z=$D/z4b05.pt
export OMP_NUM_THREADS=1
for S in 5120 5140; do
  nice -n 19 $PY eval_library.py --seed $S --episodes 20 --conditions "shipped,zero@$Z,optimistic@$Z" \
      --json results/z_$S.json > results/z_$S.log 2>&1 &
done
wait
