#!/bin/bash
# Round 3 of the agent's own pushes: the round-2 level (l230w5r2) pushes on training goals 9080-9119 while
# `jepa record` keeps camera, joint states and commanded actions; the level is retrained on play + rounds 1-3
# (each own bag at weight 5); then push through the graph on seeds 2940-2989 (no run has used them): round 3,
# round 2 and the shipped level, one after the other.
set -e
cd /work/main
export OMP_NUM_THREADS=1
P=/work/data
D=$P/own4
ROS_DOMAIN_ID=215 .venv/bin/jepa record --out $D/own_push_9080 --topics camera/image_raw joint_states jepa/action > $D/record.log 2>&1 &
REC=$!
sleep 5
ROS_DOMAIN_ID=215 .venv/bin/jepa eval --task push --episodes 40 --seed 9080 --conditions mode2 --json $D/own_push_9080.json --log-dir $D/logs checkpoint:=$P/l230w5r2/default.pt > $D/eval.log 2>&1
kill -INT $REC
wait $REC
cp $P/l230w5/default.pt $P/l230w5/default.json $P/l230w5r3/
B="--bag $P/play_contact_7000 --bag $P/play_contact_7100 --bag $P/play230/play_contact_7200 --bag $P/play230/play_contact_7300 --bag $P/play230/play_contact_7400"
.venv/bin/jepa train-high-level $B --bag $P/own2/own_push_9000 --weight $P/own2/own_push_9000=5 \
    --bag $P/own3/own_push_9040 --weight $P/own3/own_push_9040=5 --bag $D/own_push_9080 --weight $D/own_push_9080=5 \
    --set time_budget_s=1200 --out $P/l230w5r3/default_high_level.pt --verbose > $P/l230w5r3/train.log 2>&1
ROS_DOMAIN_ID=216 .venv/bin/jepa eval --task push --episodes 50 --seed 2940 --conditions mode2 --json $P/evalG/push_2940_r3.json --log-dir $P/evalG/logs_r3 checkpoint:=$P/l230w5r3/default.pt > $P/evalG/r3.log 2>&1
ROS_DOMAIN_ID=217 .venv/bin/jepa eval --task push --episodes 50 --seed 2940 --conditions mode2 --json $P/evalG/push_2940_r2.json --log-dir $P/evalG/logs_r2 checkpoint:=$P/l230w5r2/default.pt > $P/evalG/r2.log 2>&1
ROS_DOMAIN_ID=218 .venv/bin/jepa eval --task push --episodes 50 --seed 2940 --conditions mode2 --json $P/evalG/push_2940_shipped.json --log-dir $P/evalG/logs_shipped > $P/evalG/shipped.log 2>&1
echo done $(date) >> $P/evalG/shipped.log
