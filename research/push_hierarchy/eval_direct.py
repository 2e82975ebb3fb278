"""Diagnostic: the higher level's first macro-action executed directly (its net displacement spread evenly over the
macro's control steps, its gripper command), instead of the control level planning towards the sub-goal. Isolates
the higher level: if pushes improve, the control level's execution was what failed; if not, the higher level's plan.
Same arguments as `python -m jepa_bringup.sim_episodes` (needs --set levels=2 through the push task's profile)."""
import sys

import numpy as np

from jepa_actor.actor import Actor
from jepa_bringup import sim_episodes

original = Actor.act


def act_direct(self, *args, **kwargs):
    decision = original(self, *args, **kwargs)
    macro = self.subgoal_macros[0].cpu().numpy()
    decision.action = np.concatenate([macro[:3] * self.config.max_step, macro[3:]]).astype(np.float32)
    return decision


Actor.act = act_direct
sys.exit(sim_episodes.main())
