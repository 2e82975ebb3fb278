#!/bin/bash
# Confirmation of round 3 on seeds no run has used (2990-3039): the round-3 level and the shipped level, one after
# the other.
cd /work/main
export OMP_NUM_THREADS=1
P=/work/data
ROS_DOMAIN_ID=219 .venv/bin/jepa eval --task push --episodes 50 --seed 2990 --conditions mode2 --json $P/evalH/push_2990_r3.json --log-dir $P/evalH/logs_r3 checkpoint:=$P/l230w5r3/default.pt > $P/evalH/r3.log 2>&1
ROS_DOMAIN_ID=220 .venv/bin/jepa eval --task push --episodes 50 --seed 2990 --conditions mode2 --json $P/evalH/push_2990_shipped.json --log-dir $P/evalH/logs_shipped > $P/evalH/shipped.log 2>&1
echo done $(date) >> $P/evalH/shipped.log
