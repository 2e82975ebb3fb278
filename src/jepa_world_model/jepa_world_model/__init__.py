"""JEPA world model: predicts the abstract representation of the next state, never its pixels."""
import os

# Training shares the cores with the ROS nodes. OpenMP's default spin-waiting makes torch's worker threads
# burn the cores others need, and stall whenever one is preempted, so that under load 2 threads run several
# times slower than 1. Passive waiting keeps 2 threads faster than 1. Only effective before torch loads.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
