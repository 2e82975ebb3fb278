#!/bin/bash
# Round 2: train the higher level on 230 sim min of play + round 1 (own2, derived actions) + round 2 (own3, recorded
# actions), each own bag at weight 5; then push through the graph on seeds 2890-2939 (no run has used them), the
# round-2 level and the round-1 level (l230w5) one after the other.
set -e
cd /work/main
export OMP_NUM_THREADS=1
P=/work/data
cp $P/l230w5/default.pt $P/l230w5r2/default.pt
cp $P/l230w5/default.json $P/l230w5r2/default.json
B="--bag $P/play_contact_7000 --bag $P/play_contact_7100 --bag $P/play230/play_contact_7200 --bag $P/play230/play_contact_7300 --bag $P/play230/play_contact_7400"
.venv/bin/jepa train-high-level $B --bag $P/own2/own_push_9000 --weight $P/own2/own_push_9000=5 \
    --bag $P/own3/own_push_9040 --weight $P/own3/own_push_9040=5 --set time_budget_s=1200 \
    --out $P/l230w5r2/default_high_level.pt --verbose > $P/l230w5r2/train.log 2>&1
ROS_DOMAIN_ID=212 .venv/bin/jepa eval --task push --episodes 50 --seed 2890 --conditions mode2 --json $P/evalF/push_2890_r2.json --log-dir $P/evalF/logs_r2 checkpoint:=$P/l230w5r2/default.pt > $P/evalF/r2.log 2>&1
ROS_DOMAIN_ID=213 .venv/bin/jepa eval --task push --episodes 50 --seed 2890 --conditions mode2 --json $P/evalF/push_2890_r1.json --log-dir $P/evalF/logs_r1 checkpoint:=$P/l230w5/default.pt > $P/evalF/r1.log 2>&1
ROS_DOMAIN_ID=214 .venv/bin/jepa eval --task push --episodes 50 --seed 2890 --conditions mode2 --json $P/evalF/push_2890_shipped.json --log-dir $P/evalF/logs_shipped > $P/evalF/shipped.log 2>&1
echo done $(date) >> $P/evalF/shipped.log
