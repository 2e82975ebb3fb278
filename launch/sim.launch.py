"""`ros2 launch jepa_bringup sim.launch.py [gui:=true] [record:=true] [mode:=policy] ...`

The simulated Panda (PyBullet sim_node), the safety gate and the agent: graph `sim` of config/graph.yaml.
`ros2 launch jepa_bringup sim.launch.py --show-args` lists the arguments.
"""
from jepa_bringup.ros_launch import graph_launch_description


def generate_launch_description():
    return graph_launch_description('sim')
