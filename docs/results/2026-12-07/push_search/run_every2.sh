#!/bin/bash
# Push through the graph: the shipped search, replanned at the higher level every 2 control steps instead of every
# step (a shorter decision on every other step), on the seeds of run.sh (3150-3199), alone.
set -e
cd /work/main
D=/work/data/gb
uptime > $D/load_every2_start.txt
ROS_DOMAIN_ID=203 .venv/bin/jepa eval --task push --episodes 50 --seed 3150 --conditions mode2 --set actor.subgoal_every=2 --json $D/eval_push_every2_3150.json --log-dir $D/logs_c > $D/eval_c.log 2>&1
uptime > $D/load_every2_end.txt
echo done > $D/done_every2
