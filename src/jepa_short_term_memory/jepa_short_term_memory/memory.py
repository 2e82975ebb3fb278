"""Short-term memory: a bounded store of the agent's recent transitions, grouped into episodes, and of its recent
raw play.

A transition is (state z_t, action a_t, cost terms of z_t, world-model prediction of z_{t+1}, actual z_{t+1},
goal). `TransitionAssembler` pairs the separate message streams (latent, action, cost, prediction, goal) into
transitions; the short_term_memory node feeds it live and `jepa train-critic` feeds it from bags, so both
see identical episodes. Episodes go to and come back from rosbag2 bags on the agent's own topics.

`PlayRing` keeps the last seconds of the robot's raw play (camera frames, joint states, actions), serialized as a
recorder keeps them: what re-calibrating perception learns from (`jepa adjust-encoder` reads it as a play bag),
since latents cannot teach the encoder anything.
"""
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from jepa_common.settings import setting
from jepa_cost.cost import TERMS

# Order of the stored cost terms; the intrinsic cost is the sum of all but the critic.
COST_FIELDS = (*TERMS, 'critic')
# The streams a transition is assembled from, by kind: topic names relative to the graph's namespace.
TOPICS = {'latent': 'jepa/latent', 'action': 'jepa/action', 'cost': 'jepa/cost',
          'prediction': 'jepa/prediction', 'goal': 'jepa/goal_latent'}


@dataclass
class MemoryConfig:
    """How much the short-term memory keeps and where it cuts episodes."""
    capacity: int = setting(5000, 'transitions kept (the oldest are dropped first)', (1, 10_000_000))
    max_gap: float = setting(1.0, 's between two latents\' stamps that still continues an episode', (0.0, 3600.0))
    play_seconds: float = setting(240.0, 's of raw play (camera frames, joint states, actions) kept for '
                                  're-calibrating perception, a retry included (0 = none kept, '
                                  'short_term_memory/save_play refuses)',
                                  (0.0, 3600.0))

    def __post_init__(self):
        if self.capacity < 1:
            raise ValueError(f'memory capacity must be >= 1, got {self.capacity}')
        if not self.max_gap > 0:
            raise ValueError(f'max_gap must be > 0 s, got {self.max_gap}')
        if not 0 <= self.play_seconds <= 3600:
            raise ValueError(f'play_seconds must be within 0..3600 s, got {self.play_seconds}')


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

    def __init__(self, capacity: int = MemoryConfig.capacity):
        if capacity < 1:
            raise ValueError(f'memory capacity must be >= 1, got {capacity}')
        self.capacity = capacity
        self.transitions: deque[Transition] = deque(maxlen=capacity)
        self.dropped = 0
        self.model_ids: set[str] = set()

    def __len__(self) -> int:
        return len(self.transitions)

    def add(self, transition: Transition | None) -> None:
        """Store a transition (None, what the assembler returns while a transition is incomplete, is ignored)."""
        if transition is None:
            return
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
    def from_arrays(cls, arrays: dict, capacity: int = MemoryConfig.capacity) -> 'ShortTermMemory':
        memory = cls(capacity)
        for i in range(len(arrays.get('episode', ()))):
            memory.add(Transition(int(arrays['episode'][i]), float(arrays['stamps'][i]),
                                  float(arrays['next_stamps'][i]), arrays['states'][i], arrays['next_states'][i],
                                  arrays['actions'][i], arrays['cost_terms'][i], arrays['predicted'][i],
                                  arrays['goals'][i]))
        return memory


class PlayRing:
    """The last `seconds` of raw messages (bag topic, receive time ns, serialized bytes), oldest dropped first, by
    the newest message's time. Time going backwards (a replay, a simulator's clock restarting) empties it: what came
    before is another stretch of time, and a bag of both would not read as one."""

    def __init__(self, seconds: float = MemoryConfig.play_seconds):
        if not 0 <= seconds <= 3600:
            raise ValueError(f'a play ring keeps 0..3600 s, got {seconds}')
        self.span_ns = int(seconds * 1e9)
        self.messages: deque[tuple[str, int, bytes]] = deque()
        self.bytes = 0
        self.restarts = 0

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, topic: str, time_ns: int, data: bytes) -> None:
        if not self.span_ns:
            return
        if self.messages and time_ns < self.messages[-1][1]:
            self.clear()
            self.restarts += 1
        self.messages.append((topic, time_ns, data))
        self.bytes += len(data)
        while time_ns - self.messages[0][1] > self.span_ns:
            self.bytes -= len(self.messages.popleft()[2])

    def clear(self) -> None:
        self.messages.clear()
        self.bytes = 0

    def since(self, time_ns: int = 0) -> list[tuple[str, int, bytes]]:
        """The messages received at or after time_ns, oldest first (a copy: the ring goes on filling)."""
        return [m for m in self.messages if m[1] >= time_ns]

    @staticmethod
    def span(messages: list[tuple[str, int, bytes]]) -> float:
        """The time messages span, s."""
        return (messages[-1][1] - messages[0][1]) / 1e9 if messages else 0.0

    @property
    def seconds(self) -> float:
        """The time the ring spans, s."""
        return self.span([self.messages[0], self.messages[-1]]) if self.messages else 0.0

    @staticmethod
    def counts(messages: list[tuple[str, int, bytes]]) -> Counter:
        """Messages per topic."""
        return Counter(topic for topic, _, _ in messages)


def stack_transitions(ts: list[Transition]) -> dict:
    cost_terms = np.stack([t.cost_terms for t in ts]).astype(np.float32)
    return {'stamps': np.array([t.stamp for t in ts]), 'next_stamps': np.array([t.next_stamp for t in ts]),
            'states': np.stack([t.state for t in ts]).astype(np.float32),
            'next_states': np.stack([t.next_state for t in ts]).astype(np.float32),
            'actions': np.stack([t.action for t in ts]).astype(np.float32),
            'cost_terms': cost_terms, 'costs': cost_terms[:, :len(TERMS)].sum(1),
            'predicted': np.stack([t.predicted_next for t in ts]).astype(np.float32),
            'goals': np.stack([t.goal for t in ts]).astype(np.float32)}


class TransitionAssembler:
    """Turns the interleaved streams into transitions. Everything is matched by stamp, not arrival order:
    the cost and the world model's prediction carry the stamp of the latent they are about, and the action
    taken from the latent at t is stamped in [t, next latent). A transition is completed one latent late,
    so that messages of the interval that arrive after the next latent still find it.
    A new episode starts when the goal changes, the latent model changes, time goes backwards (reset,
    replay), or the gap between latents exceeds max_gap (perception refused frames: actions nobody saw).
    A latent equal to the previous one is a still scene (perception gives no latent for a frozen camera: it
    checks identical frames against the joint states), a transition like any other: the critic learns from
    resting at the goal."""

    def __init__(self, max_gap: float = MemoryConfig.max_gap, action_dim: int = 4):
        self.max_gap = max_gap
        self.action_dim = action_dim
        self.episode = 0
        self._goal: np.ndarray | None = None
        self._previous: tuple | None = None  # (stamp, z, model_id)
        self._pending: tuple | None = None   # (episode, stamp, z, next_stamp, next_z, goal)
        self._actions: deque = deque(maxlen=64)  # (stamp_ns, action)
        self._costs: dict = {}
        self._predictions: dict = {}

    def new_episode(self) -> Transition | None:
        """Cut here; returns the transition that was waiting to be completed, if any."""
        done = self.flush()
        self.episode += 1
        self._previous = None
        return done

    def goal(self, z_goal: np.ndarray) -> Transition | None:
        z_goal = np.asarray(z_goal, dtype=np.float32).reshape(-1)
        if self._goal is None or z_goal.shape != self._goal.shape or not np.array_equal(z_goal, self._goal):
            self._goal = z_goal
            return self.new_episode()
        return None

    def action(self, stamp: float, action: np.ndarray) -> None:
        self._actions.append((_ns(stamp), np.asarray(action, dtype=np.float32).reshape(-1)))

    def prediction(self, source_stamp: float, z_pred: np.ndarray) -> None:
        _remember(self._predictions, _ns(source_stamp), np.asarray(z_pred, dtype=np.float32).reshape(-1))

    def cost(self, stamp: float, terms: np.ndarray) -> None:
        _remember(self._costs, _ns(stamp), np.asarray(terms, dtype=np.float32))

    def latent(self, stamp: float, z: np.ndarray, model_id: str = '') -> Transition | None:
        """A new state arrived: returns the transition completed now (None while one is still waiting)."""
        z = np.asarray(z, dtype=np.float32).reshape(-1)
        prev = self._previous
        if prev is not None and stamp == prev[0] and model_id == prev[2]:
            return None  # the same latent twice
        done = self.flush()
        if prev is not None and (model_id != prev[2] or z.shape != prev[1].shape
                                 or not 0 < stamp - prev[0] <= self.max_gap):
            self.episode += 1
            prev = None
        if prev is not None:
            goal = self._goal if self._goal is not None and self._goal.shape == z.shape else None
            self._pending = (self.episode, prev[0], prev[1], stamp, z, goal)
        self._previous = (stamp, z, model_id)
        return done

    def flush(self) -> Transition | None:
        """Complete the waiting transition with whatever has arrived for it."""
        if self._pending is None:
            return None
        episode, stamp, z, next_stamp, next_z, goal = self._pending
        self._pending = None
        start, end = _ns(stamp), _ns(next_stamp)
        action = next((a for s, a in reversed(self._actions) if start <= s < end and a.size == self.action_dim), None)
        prediction = self._predictions.get(start)
        nan = lambda n: np.full(n, np.nan, dtype=np.float32)  # noqa: E731
        return Transition(episode, stamp, next_stamp, z, next_z,
                          action if action is not None else nan(self.action_dim),
                          self._costs.get(start, nan(len(COST_FIELDS))),
                          prediction if prediction is not None and prediction.shape == z.shape else nan(z.size),
                          goal if goal is not None else nan(z.size))


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def _remember(table: dict, key: int, value, keep: int = 32) -> None:
    table[key] = value
    while len(table) > keep:  # entries about latents long gone
        table.pop(next(iter(table)))
