"""The cost weights as node parameters `weights.<term>`: the cost node, the actor and the configurator's task
profiles declare them from CostWeights, where their defaults live."""
import numpy as np
from rclpy.node import Node

from jepa_cost.cost import CostWeights


def declare_weights(node: Node) -> CostWeights:
    defaults = CostWeights()
    return CostWeights(**{name: float(node.declare_parameter(f'weights.{name}', getattr(defaults, name)).value)
                          for name in CostWeights.names()})


def weight_changes(parameters) -> dict:
    """{weight name: value} for the weights.* among changed parameters; ValueError on a bad value."""
    changes = {}
    for p in parameters:
        if p.name.startswith('weights.'):
            name = p.name.split('.', 1)[1]
            if name not in CostWeights.names():
                raise ValueError(f'unknown cost weight {name!r} (known: {", ".join(CostWeights.names())})')
            value = float(p.value)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f'cost weight {name} must be finite and >= 0, got {p.value}')
            changes[name] = value
    return changes
