"""The higher level's terminal cost with value.py's goal-conditioned value: cost = base x (the shipped terminal
cost: latent + energy + effort) + value_weight x (steps to the goal by the value). Otherwise as
`python -m jepa_bringup.sim_episodes` (push, levels 2): `eval_value.py --value FILE --value-weight W --base B ARGS`."""
import sys

import torch

from jepa_bringup import sim_episodes
from jepa_cost.cost import SubgoalObjective
from value import GoalValue


def option(name, default):
    if name not in sys.argv:
        return default
    k = sys.argv.index(name)
    value = sys.argv[k + 1]
    del sys.argv[k:k + 2]
    return value


blob = torch.load(option('--value', None), map_location='cpu')
weight, base = float(option('--value-weight', 1.0)), float(option('--base', 0.0))
value = GoalValue(blob['latent_dim'])
value.load_state_dict(blob['state_dict'])
value.eval()
shipped = SubgoalObjective.__call__


def call(self, macros):
    terminal = self.rollout(macros)[:, -1]
    steps = -value(terminal, self.goal.expand_as(terminal))
    return weight * steps + (base * shipped(self, macros) if base else 0.0)


SubgoalObjective.__call__ = call
sys.exit(sim_episodes.main())
