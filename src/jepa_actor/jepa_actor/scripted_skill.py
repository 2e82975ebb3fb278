"""`scripted_skill`: the hand-written push controller, a reference condition (ROS-free), never the agent.

`PushSkill` decomposes a push into approach (above the point behind the cube on the line to its goal), descend,
and push along that line, re-approaching when the cube slides off it. It works on positions: in the actor's
`skill: push` (the `push_skill` task, evaluated as `scripted_skill`) on cube positions the world model's learned
read-out (jepa_world_model.readout) finds in the latents, in the evaluation's oracle on the simulator's true
positions. Its phases, geometry and contact constants are hand-written: the condition measures what a scripted
decomposition gets, the learned agent is judged without it.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class PushSkillConfig:
    # Defaults: the simulated 5-cm cube and the evaluation's push geometry (jepa_bringup.episodes).
    push_height: float = 0.035      # end-effector height while pushing (fingertips above the table)
    contact: float = 0.037          # end effector to cube centre in contact: half the cube + half the fingers
    standoff: float = 0.03          # start the push this far behind the contact point
    clearance: float = 0.08         # above push_height while moving behind the cube
    aligned: float = 0.012          # behind the cube within this (x, y) distance: descend
    descended: float = 0.01         # within this height above push_height: push
    off_line: float = 0.02          # the cube this far beside the pushing line: go round again
    done: float = 0.01              # the cube this close to its goal: lift off
    lift: float = 0.05              # above push_height when done
    push_speed: float = 0.5         # share of the action bound while pushing
    steer: bool = False             # while pushing, aim along the cube's current line to the goal (not the approach's)
    gripper: float = -1.0           # closed: the fingers push with one flat face


class PushSkill:
    """The phases of one push, on positions: `reset(goal_xy)`, then per step `target(ee, cube_xy)` -> (the
    end-effector position to move towards, the share of the action bound to move at)."""

    def __init__(self, config: PushSkillConfig | None = None):
        self.config = config or PushSkillConfig()
        self.goal: np.ndarray | None = None
        self.phase = 'approach'
        self.direction = np.zeros(2)

    def reset(self, goal_xy) -> None:
        self.goal = np.asarray(goal_xy, dtype=float)[:2].copy()
        self.phase = 'approach'
        self.direction = np.zeros(2)

    def target(self, ee, cube_xy) -> tuple[np.ndarray, float]:
        if self.goal is None:
            raise RuntimeError('PushSkill.target before reset(goal_xy)')
        c = self.config
        ee, cube = np.asarray(ee, dtype=float), np.asarray(cube_xy, dtype=float)[:2]
        to_goal = self.goal - cube
        if np.linalg.norm(to_goal) < c.done:
            return np.r_[ee[:2], c.push_height + c.lift], 1.0
        if self.phase == 'approach':
            self.direction = to_goal / np.linalg.norm(to_goal)
        behind = cube - self.direction * (c.contact + c.standoff)
        if self.phase == 'approach':
            # From above, so that moving behind the cube does not knock it.
            if np.linalg.norm(ee[:2] - behind) < c.aligned:
                self.phase = 'descend'
            return np.r_[behind, c.push_height + c.clearance], 1.0
        if self.phase == 'descend':
            if ee[2] < c.push_height + c.descended:
                self.phase = 'push'
            return np.r_[behind, c.push_height], 1.0
        if c.steer:
            # A cube that drifted sideways is pushed from where it is now: its offset from the first line stays
            # otherwise, up to `off_line`.
            self.direction = to_goal / np.linalg.norm(to_goal)
        offset = cube - ee[:2]
        lateral = abs(offset[0] * self.direction[1] - offset[1] * self.direction[0])
        if lateral > c.off_line or offset @ self.direction < 0:
            self.phase = 'approach'
            return np.r_[ee[:2], c.push_height + c.clearance], 1.0
        return np.r_[self.goal - self.direction * c.contact, c.push_height], c.push_speed
