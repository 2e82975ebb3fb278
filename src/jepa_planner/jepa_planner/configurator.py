"""The configurator's core (ROS-free): task profiles (cost weights + mode per task) and the surprise monitor
that decides when planning has stopped producing the outcomes the world model predicts."""
import math
from dataclasses import dataclass

from jepa_planner.cost import CostWeights

TASKS = ('reach', 'push', 'idle')
ADJUSTMENTS = ('critic', 'world_model')


@dataclass
class SurpriseMonitor:
    """Counts consecutive surprising steps (normalized prediction error above threshold). After `patience`
    of them in a row it fires, at most once per `cooldown` seconds: the plans keep failing to produce the
    predicted outcome, so the world model or the critic needs adjusting (learning only when planning
    alone does not do it)."""
    threshold: float = 1.0
    patience: int = 5
    cooldown: float = 30.0
    streak: int = 0
    fired: int = 0
    observed: int = 0
    surprising: int = 0
    _last_fired: float = -math.inf

    def observe(self, normalized_error: float, now: float) -> bool:
        if not math.isfinite(normalized_error):
            return False
        self.observed += 1
        if normalized_error > self.threshold:
            self.streak += 1
            self.surprising += 1
        else:
            self.streak = 0
        if self.streak >= self.patience and now - self._last_fired >= self.cooldown:
            self.streak = 0
            self.fired += 1
            self._last_fired = now
            return True
        return False


def task_weights(task: str, profiles: dict[str, dict[str, float]]) -> CostWeights:
    """The cost weights of a task from {task: {weight name: value}} (unnamed weights keep their defaults)."""
    if task not in profiles:
        raise ValueError(f'unknown task {task!r} (known: {", ".join(sorted(profiles))})')
    unknown = set(profiles[task]) - set(CostWeights.names())
    if unknown:
        raise ValueError(f'task {task!r} sets unknown cost weights {sorted(unknown)}')
    return CostWeights(**profiles[task])
