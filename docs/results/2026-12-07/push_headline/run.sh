#!/bin/bash
cd /work/main
export ROS_DOMAIN_ID=141
uptime > /work/data/head/load_start.txt
.venv/bin/jepa eval --task push --episodes 50 --reference-episodes 20 --seed 3040 \
  --conditions mode2,one_level,scripted_skill,random,oracle \
  --json /work/data/head/eval_push_3040.json --plot /work/data/head/eval_push_3040.png > /work/data/head/eval.log 2>&1
echo "rc=$?" >> /work/data/head/eval.log
uptime > /work/data/head/load_end.txt
