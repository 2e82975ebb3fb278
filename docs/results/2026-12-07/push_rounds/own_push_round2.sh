#!/bin/bash
# Round 2 of the agent's own push episodes (DAgger): the graph with the round-1 level (l230w5: 230 sim min of play
# + round 1's own pushes at weight 5) pushes on training goals 9040-9079 (no evaluation uses them) while
# `jepa record` keeps camera, joint states and the actor's commanded actions (round 1 derived them from joint motion).
cd /work/main
export ROS_DOMAIN_ID=211 OMP_NUM_THREADS=1
D=/work/data/own3
.venv/bin/jepa record --out $D/own_push_9040 --topics camera/image_raw joint_states jepa/action > $D/record.log 2>&1 &
REC=$!
sleep 5
.venv/bin/jepa eval --task push --episodes 40 --seed 9040 --conditions mode2 --json $D/own_push_9040.json --log-dir $D/logs checkpoint:=/work/data/l230w5/default.pt > $D/eval.log 2>&1
kill -INT $REC
wait $REC
echo done $(date) >> $D/eval.log
