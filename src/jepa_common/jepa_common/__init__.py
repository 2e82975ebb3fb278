"""Shared pieces of the JEPA agent stack: message conversions, arm kinematics, node entry helper."""
