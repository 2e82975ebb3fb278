#!/bin/bash
# Push through the graph: the shipped higher-level search (256 x 3) and a larger one (512 x 4), the same 50 new
# seeds, one run after the other, nothing else running.
set -e
cd /work/main
D=/work/data/gb
uptime > $D/load_start.txt
ROS_DOMAIN_ID=201 .venv/bin/jepa eval --task push --episodes 50 --seed 3150 --conditions mode2 --json $D/eval_push_search256x3_3150.json --log-dir $D/logs_a > $D/eval_a.log 2>&1
uptime > $D/load_mid.txt
ROS_DOMAIN_ID=202 .venv/bin/jepa eval --task push --episodes 50 --seed 3150 --conditions mode2 --set actor.subgoal_samples=512 --set actor.subgoal_iterations=4 --json $D/eval_push_search512x4_3150.json --log-dir $D/logs_b > $D/eval_b.log 2>&1
uptime > $D/load_end.txt
echo done > $D/done
