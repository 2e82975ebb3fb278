#!/bin/bash
cd /work/main
export ROS_DOMAIN_ID=142
uptime > /work/data/m1/load_start.txt
.venv/bin/jepa eval --task push --episodes 30 --seed 3090 --conditions mode2,mode1,mode1_fresh \
  --json /work/data/m1/eval_push_mode1_3090.json --plot /work/data/m1/eval_push_mode1_3090.png > /work/data/m1/eval.log 2>&1
echo "rc=$?" >> /work/data/m1/eval.log
uptime > /work/data/m1/load_end.txt
