"""The QoS profiles the graph's topics use, defined once."""
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

# State that a late joiner needs at once (goal latents, model versions, the task): the last value is kept.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Plan on the newest state only: a latent that waited behind a slower plan is already stale.
NEWEST = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
# Commands and events: every message counts, a short burst is queued.
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Camera frames and joint states: best effort, as drivers publish them.
SENSOR = qos_profile_sensor_data
