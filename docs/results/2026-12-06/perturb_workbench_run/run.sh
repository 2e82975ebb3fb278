#!/bin/bash
# Reach Mode-2 in the lock-step workbench under each named perturbation, one run, seeds 7000-7009 (load-independent).
cd /work/main
export OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
for p in none camera_moved sluggish_arm heavy_cube recoloured_cube camera_x2; do
  case $p in
    none) extra="";;
    camera_x2) extra="--perturb camera_moved --perturb-set camera_shift=0.06,0,0 --perturb-set camera_rotation=0,8,0";;
    *) extra="--perturb $p";;
  esac
  nice -n 19 $PY -m jepa_bringup.sim_episodes --task reach --episodes 10 --seed 7000 --command-delay 0.05 $extra --json /work/runs/perturb_wb/$p.json > /work/runs/perturb_wb/$p.log 2>&1
done
