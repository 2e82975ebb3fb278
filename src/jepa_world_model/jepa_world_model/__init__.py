"""JEPA world model: predicts the abstract representation of the next state, never its pixels."""
import os

# Training shares two cores with the ROS nodes. OpenMP's default spin-waiting makes torch's worker
# threads burn the cores others need, and stall whenever one is preempted (measured: 2 threads 6x slower
# than 1 under load). Passive waiting keeps 2 threads faster than 1. Only effective before torch loads.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
