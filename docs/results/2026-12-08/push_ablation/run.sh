# The runs of docs/results/LOG.md "2026-12-08 (session 15)", one after the other, from the repository root.
# 1. The shipped agent (commit fad3348), seeds 3200-3249.
ROS_DOMAIN_ID=151 .venv/bin/jepa eval --task push --episodes 50 --seed 3200 --conditions mode2 \
    --json eval_push_shipped_3200.json --plot eval_push_shipped_3200.png
# 2. The same seeds, the higher level's predictor replaced by a random network (files written by the script).
.venv/bin/python research/push_hierarchy/random_high_level.py --out /work/data/s15/random_high --seed 0
ROS_DOMAIN_ID=152 .venv/bin/jepa eval --task push --episodes 50 --seed 3200 --conditions mode2 \
    --json eval_push_random_high_3200.json checkpoint:=/work/data/s15/random_high/ablated.pt
# 3. Success against goal distance: goals 5-25 cm, new seeds, two levels, one level and the oracle in one run (commit fbcb224).
ROS_DOMAIN_ID=153 .venv/bin/jepa eval --task push --episodes 50 --reference-episodes 20 --seed 3250 \
    --conditions mode2,one_level,oracle --push-distance 0.05,0.25 --json eval_push_distance_3250.json --plot eval_push_distance_3250.png
.venv/bin/python research/ablations/success_vs_distance.py eval_push_distance_3250.json --out push_success_vs_distance_3250.png
# 4. Both predictors random (the control level's too), the first 20 of the same seeds (after run 3; the tree differed in docs only).
.venv/bin/python research/push_hierarchy/random_high_level.py --out /work/data/s15/random_both --seed 0 --both
ROS_DOMAIN_ID=154 .venv/bin/jepa eval --task push --episodes 20 --seed 3200 --conditions mode2 \
    --json eval_push_random_both_3200.json checkpoint:=/work/data/s15/random_both/ablated.pt
# 5. The higher level planning 8 macro-actions ahead at the shipped cost (8 x 192 = 6 x 256), the distance run's seeds.
ROS_DOMAIN_ID=155 .venv/bin/jepa eval --task push --episodes 50 --seed 3250 --conditions mode2 --push-distance 0.05,0.25 \
    --set actor.subgoal_horizon=8 --set actor.subgoal_samples=192 --json eval_push_distance_h8_3250.json
