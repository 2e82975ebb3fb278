"""Simulated and mock arms behind a ros2_control-like interface: PyBullet Panda core, trajectory follower."""
