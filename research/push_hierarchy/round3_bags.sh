# The shipped (round-3) higher level's training bags as `jepa train-high-level` arguments (checkpoints/README.md):
# B, the five play bags; O, the three rounds of own pushes, each counted 5 times. Sourced by run_z.sh, run_z2.sh.
B="--bag /work/data/play_contact_7000 --bag /work/data/play_contact_7100 --bag /work/data/play230/play_contact_7200 --bag /work/data/play230/play_contact_7300 --bag /work/data/play230/play_contact_7400"
O="--bag /work/data/own2/own_push_9000 --weight /work/data/own2/own_push_9000=5 --bag /work/data/own3/own_push_9040 --weight /work/data/own3/own_push_9040=5 --bag /work/data/own4/own_push_9080 --weight /work/data/own4/own_push_9080=5"
