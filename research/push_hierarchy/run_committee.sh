#!/bin/bash
# §22: three trainings of the round-3 recipe (seeds 0 = shipped, 1, 2) and their committee, interleaved seed by
# seed in process on seeds 5080-5119 (two processes of 20). Levels: /work/data/ens/s{1,2} (train.log beside each).
cd "$(dirname "$0")"
export PYTHONPATH=. OMP_NUM_THREADS=1
PY=../../.venv/bin/python
R3=../../src/jepa_world_model/jepa_world_model/checkpoints/default_high_level.pt
S1=/work/data/ens/s1/default_high_level.pt
S2=/work/data/ens/s2/default_high_level.pt
C="shipped,shipped@$S1,shipped@$S2,shipped@$R3+$S1+$S2"
for S in 5080 5100; do
  nice -n 19 $PY eval_library.py --seed $S --episodes 20 --conditions "$C" --json results/committee_$S.json \
      > results/committee_$S.log 2>&1 &
done
wait
