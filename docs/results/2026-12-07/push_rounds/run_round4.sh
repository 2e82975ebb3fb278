#!/bin/bash
# Round 4 of the agent's own pushes: the shipped level (round 3) pushes on training goals 9120-9159 while
# `jepa record` keeps camera, joint states and commanded actions; the level is retrained on play + rounds 1-4
# (each own bag at weight 5); then push through the graph on the headline run's seeds 3040-3089 (paired with its
# mode2 row, the shipped level).
set -e
cd /work/main
export OMP_NUM_THREADS=1
P=/work/data
D=$P/own5
ROS_DOMAIN_ID=219 .venv/bin/jepa record --out $D/own_push_9120 --topics camera/image_raw joint_states jepa/action > $D/record.log 2>&1 &
REC=$!
sleep 5
ROS_DOMAIN_ID=219 .venv/bin/jepa eval --task push --episodes 40 --seed 9120 --conditions mode2 --json $D/own_push_9120.json --log-dir $D/logs > $D/eval.log 2>&1
kill -INT $REC
wait $REC
cp $P/l230w5/default.pt $P/l230w5/default.json $P/l230w5r4/
B="--bag $P/play_contact_7000 --bag $P/play_contact_7100 --bag $P/play230/play_contact_7200 --bag $P/play230/play_contact_7300 --bag $P/play230/play_contact_7400"
.venv/bin/jepa train-high-level $B --bag $P/own2/own_push_9000 --weight $P/own2/own_push_9000=5 \
    --bag $P/own3/own_push_9040 --weight $P/own3/own_push_9040=5 --bag $P/own4/own_push_9080 --weight $P/own4/own_push_9080=5 \
    --bag $D/own_push_9120 --weight $D/own_push_9120=5 \
    --set time_budget_s=1200 --out $P/l230w5r4/default_high_level.pt --verbose > $P/l230w5r4/train.log 2>&1
ROS_DOMAIN_ID=220 .venv/bin/jepa eval --task push --episodes 50 --seed 3040 --conditions mode2 --json $P/evalI/push_3040_r4.json --log-dir $P/evalI/logs_r4 checkpoint:=$P/l230w5r4/default.pt > $P/evalI/r4.log 2>&1
echo done $(date) >> $P/evalI/r4.log
