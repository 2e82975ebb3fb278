"""`ros2 launch jepa_bringup arm.launch.py arm:=ur5e [camera_topic:=...] [fake_arm:=true] ...`

A physical arm: the safety gate and the agent, talking to the robot's own ros2_control driver (started
separately, see docs/real_arm.md) or to fake_arm_node (fake_arm:=true): graph `arm` of config/graph.yaml.
`ros2 launch jepa_bringup arm.launch.py --show-args` lists the arguments.
"""
from jepa_bringup.ros_launch import graph_launch_description


def generate_launch_description():
    return graph_launch_description('arm')
