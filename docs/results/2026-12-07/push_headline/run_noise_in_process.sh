#!/bin/bash
# In process, the shipped (round-3) higher level and the same level with its predictor replaced by noise,
# seeds 3040-3059 (the headline run's), one after the other.
while pgrep -f "run_round4.sh" > /dev/null; do sleep 10; done
cd /work/main/research/push_hierarchy
export OMP_NUM_THREADS=1
PY=../../.venv/bin/python
uptime > /work/data/noise/load_start.txt
$PY -m jepa_bringup.sim_episodes --task push --episodes 20 --seed 3040 --conditions mode2 --json /work/data/noise/inproc_two_3040.json > /work/data/noise/two.log 2>&1
$PY ablate_high_level.py --task push --episodes 20 --seed 3040 --conditions mode2 --json /work/data/noise/inproc_noise_3040.json > /work/data/noise/noise.log 2>&1
uptime > /work/data/noise/load_end.txt
