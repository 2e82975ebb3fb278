"""Safety gate: every command to an arm passes through here (ROS-free core in gate.py, node in safety_node.py)."""
