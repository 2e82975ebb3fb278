"""Short-term memory: a bounded store of the agent's recent transitions, grouped into episodes.

A transition is (state z_t, action a_t, cost terms of z_t, world-model prediction of z_{t+1}, actual z_{t+1},
goal). `TransitionAssembler` pairs the separate message streams (latent, action, cost, prediction, goal) into
transitions; the short_term_memory node feeds it live and `jepa train-critic` feeds it from bags, so both
see identical episodes. Episodes go to and come back from rosbag2 bags on the agent's own topics.
"""
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jepa_planner.cost import TERMS

# Order of the stored cost terms; the intrinsic cost is the sum of all but the critic.
COST_FIELDS = (*TERMS, 'critic')
TOPICS = {'latent': '/jepa/latent', 'action': '/jepa/action', 'cost': '/jepa/cost',
          'prediction': '/jepa/prediction', 'goal': '/jepa/goal_latent'}


@dataclass
class Transition:
    episode: int
    stamp: float                      # seconds, stamp of z_t (its camera image)
    next_stamp: float
    state: np.ndarray                 # (D,)
    next_state: np.ndarray            # (D,)
    action: np.ndarray                # (A,); NaN when no action was seen in the interval
    cost_terms: np.ndarray            # (len(COST_FIELDS),) weighted terms of z_t; NaN when no cost was seen
    predicted_next: np.ndarray        # (D,); NaN when the world model did not predict
    goal: np.ndarray                  # (D,); NaN when no goal was set

    @property
    def intrinsic_cost(self) -> float:
        return float(np.sum(self.cost_terms[:len(TERMS)]))


class ShortTermMemory:
    """Ring buffer of transitions (oldest dropped first), with episode grouping preserved."""

    def __init__(self, capacity: int = 5000):
        if capacity < 1:
            raise ValueError(f'memory capacity must be >= 1, got {capacity}')
        self.capacity = capacity
        self.transitions: deque[Transition] = deque(maxlen=capacity)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.transitions)

    def add(self, transition: Transition) -> None:
        if len(self.transitions) == self.capacity:
            self.dropped += 1
        self.transitions.append(transition)

    def clear(self) -> None:
        self.transitions.clear()

    def episodes(self) -> list[dict]:
        """Episodes as dicts of stacked arrays: stamps, states, actions, cost_terms, costs (intrinsic),
        next_states, predicted, goals (rows in time order)."""
        groups: dict[int, list[Transition]] = {}
        for t in self.transitions:
            groups.setdefault(t.episode, []).append(t)
        return [stack_transitions(ts) for ts in groups.values()]

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> dict:
        """A random batch of transitions as stacked arrays (with replacement)."""
        if not self.transitions:
            raise ValueError('short-term memory is empty')
        rng = rng or np.random.default_rng()
        idx = rng.integers(0, len(self.transitions), batch_size)
        return stack_transitions([self.transitions[i] for i in idx])

    def to_arrays(self) -> dict:
        """Everything as flat arrays (np.savez-able); from_arrays() restores it."""
        return {'episode': np.array([t.episode for t in self.transitions], dtype=np.int64),
                **stack_transitions(list(self.transitions))} if self.transitions else {}

    @classmethod
    def from_arrays(cls, arrays: dict, capacity: int = 5000) -> 'ShortTermMemory':
        memory = cls(capacity)
        for i in range(len(arrays.get('episode', ()))):
            memory.add(Transition(int(arrays['episode'][i]), float(arrays['stamps'][i]),
                                  float(arrays['next_stamps'][i]), arrays['states'][i], arrays['next_states'][i],
                                  arrays['actions'][i], arrays['cost_terms'][i], arrays['predicted'][i],
                                  arrays['goals'][i]))
        return memory


def stack_transitions(ts: list[Transition]) -> dict:
    cost_terms = np.stack([t.cost_terms for t in ts]).astype(np.float32)
    return {'stamps': np.array([t.stamp for t in ts]), 'next_stamps': np.array([t.next_stamp for t in ts]),
            'states': np.stack([t.state for t in ts]).astype(np.float32),
            'next_states': np.stack([t.next_state for t in ts]).astype(np.float32),
            'actions': np.stack([t.action for t in ts]).astype(np.float32),
            'cost_terms': cost_terms, 'costs': cost_terms[:, :len(TERMS)].sum(1),
            'predicted': np.stack([t.predicted_next for t in ts]).astype(np.float32),
            'goals': np.stack([t.goal for t in ts]).astype(np.float32)}


@dataclass
class TransitionAssembler:
    """Turns the interleaved streams into transitions. A new episode starts when the goal changes, the
    latent model changes, time goes backwards (reset, replay) or the gap between latents exceeds max_gap."""
    max_gap: float = 1.0
    action_dim: int = 4
    episode: int = 0
    _previous: tuple | None = None            # (stamp, z, model_id)
    _action: np.ndarray | None = None
    _prediction: np.ndarray | None = None
    _goal: np.ndarray | None = None
    _costs: dict = field(default_factory=dict)  # latent stamp -> cost terms

    def new_episode(self) -> None:
        self.episode += 1
        self._previous, self._action, self._prediction = None, None, None
        self._costs.clear()

    def goal(self, z_goal: np.ndarray) -> None:
        if self._goal is None or z_goal.shape != self._goal.shape or not np.array_equal(z_goal, self._goal):
            self._goal = np.asarray(z_goal, dtype=np.float32)
            self.new_episode()

    def action(self, action: np.ndarray) -> None:
        self._action = np.asarray(action, dtype=np.float32)

    def prediction(self, z_pred: np.ndarray) -> None:
        self._prediction = np.asarray(z_pred, dtype=np.float32)

    def cost(self, stamp: float, terms: np.ndarray) -> None:
        self._costs[round(stamp, 6)] = np.asarray(terms, dtype=np.float32)
        while len(self._costs) > 16:  # costs of latents long gone
            self._costs.pop(next(iter(self._costs)))

    def latent(self, stamp: float, z: np.ndarray, model_id: str = '') -> Transition | None:
        """A new state arrived: returns the transition that ends in it (None at an episode start)."""
        z = np.asarray(z, dtype=np.float32).reshape(-1)
        transition = None
        prev = self._previous
        if prev is not None and (model_id != prev[2] or z.shape != prev[1].shape or not
                                 (0 < stamp - prev[0] <= self.max_gap)):
            if stamp != prev[0]:  # a duplicate latent is ignored, anything else cuts the episode
                self.new_episode()
            else:
                return None
            prev = None
        if prev is not None:
            nan = lambda n: np.full(n, np.nan, dtype=np.float32)  # noqa: E731
            transition = Transition(
                self.episode, prev[0], stamp, prev[1], z,
                self._action if self._action is not None else nan(self.action_dim),
                self._costs.get(round(prev[0], 6), nan(len(COST_FIELDS))),
                self._prediction if self._prediction is not None and self._prediction.shape == z.shape
                else nan(z.size),
                self._goal if self._goal is not None and self._goal.shape == z.shape else nan(z.size))
        self._previous = (stamp, z, model_id)
        self._action, self._prediction = None, None
        return transition
