"""The configurator's core (ROS-free): task profiles (cost weights + mode per task) and the surprise monitor
that decides when planning has stopped producing the outcomes the world model predicts."""
import math
from dataclasses import dataclass
from pathlib import Path

from jepa_cost.cost import CostWeights
from jepa_world_model.model import read_checkpoint

# push_skill: push with the hand-written push skill as the actor's higher level (a reference, not the agent).
TASKS = ('reach', 'push', 'push_skill', 'idle')
ADJUSTMENTS = ('critic', 'world_model')


@dataclass
class SurpriseMonitor:
    """Decides when surprise is sustained: normalized prediction errors above `threshold` times `baseline`, the
    error the model in service makes on its own held-out data (`expected_surprise`), at least `patience` in a
    row and spanning at least `min_span` seconds of the observations' stamps, with no silence longer than
    `max_gap` between two of them. Then it fires, at most once per `cooldown` seconds (of stamps): the plans
    keep failing to produce the predicted outcome, so the world model or the critic needs adjusting (learning
    only when planning alone does not do it).

    Relative, because what counts as surprising depends on the model: the former absolute threshold, a normalized
    error of 1, is 160 times the shipped model's held-out one-step error and was never reached. Sustained over time
    and not only over callbacks, because a glitch the perception did not catch makes a burst of surprise as dense as
    the camera's rate, while a world that really works otherwise than predicted keeps surprising. A silence breaks
    the streak: when perception refuses frames, the surprise on either side of the gap is not one sustained episode.
    Only the model in service (`model_id`, when known) can be surprised: errors another model made (still in flight
    when a new one was installed) are not counted; with no model in service (`serve_none`: its checkpoint is
    unreadable) nothing is."""
    threshold: float = 5.0
    baseline: float = 1.0
    patience: int = 5
    min_span: float = 3.0
    max_gap: float = 0.5
    cooldown: float = 30.0
    model_id: str | None = ''
    streak: int = 0
    fired: int = 0
    observed: int = 0
    surprising: int = 0
    other_model: int = 0
    _streak_start: float = math.nan
    _last_stamp: float = -math.inf
    _last_fired: float = -math.inf

    def serve(self, model_id: str, baseline: float) -> None:
        """A new model is in service: its surprise is judged against its own held-out error, and the streak
        starts again (the misses of the model it replaced say nothing about it)."""
        self.model_id, self.baseline, self.streak = model_id, baseline, 0

    def serve_none(self) -> None:
        """No usable model is in service: no surprise can be judged until one is."""
        self.model_id, self.streak = None, 0

    def new_task(self) -> None:
        """The task changed: a streak of surprise belongs to the task it happened in."""
        self.streak = 0

    def observe(self, normalized_error: float, stamp: float, model_id: str = '') -> bool:
        """One surprise report (stamp: seconds, the stamp of the latent it scored)."""
        if not math.isfinite(normalized_error) or self.model_id is None:
            return False
        if self.model_id and model_id and model_id != self.model_id:
            self.other_model += 1
            return False
        self.observed += 1
        if stamp < self._last_stamp:  # time restarted (a replay, a simulator reset): so do streak and cooldown
            self.streak, self._last_fired = 0, -math.inf
        if stamp - self._last_stamp > self.max_gap:
            self.streak = 0
        self._last_stamp = stamp
        if normalized_error <= self.threshold * self.baseline:
            self.streak = 0
            return False
        self.surprising += 1
        if self.streak == 0:
            self._streak_start = stamp
        self.streak += 1
        if self.streak >= self.patience and stamp - self._streak_start >= self.min_span \
                and stamp - self._last_fired >= self.cooldown:
            self.streak = 0
            self.fired += 1
            self._last_fired = stamp
            return True
        return False


def expected_surprise(checkpoint_path: str) -> tuple[float | None, str]:
    """The normalized one-step prediction error a world model made on its held-out windows when it was
    trained (checkpoint metrics: validation normalized_error at horizon 1), None when the checkpoint does not
    record it, and the model's id. Adjusted checkpoints carry their original's metrics: same encoder, same
    scale. Raises CheckpointError for an unreadable checkpoint."""
    checkpoint, model_id = read_checkpoint(checkpoint_path)
    errors = (checkpoint.get('metrics') or {}).get('validation', {}).get('normalized_error') or []
    first = float(errors[0]) if errors else math.nan
    return (first if math.isfinite(first) and first > 0 else None), model_id


def task_weights(task: str, profiles: dict[str, dict[str, float]]) -> CostWeights:
    """The cost weights of a task from {task: {weight name: value}} (unnamed weights keep their defaults)."""
    if task not in profiles:
        raise ValueError(f'unknown task {task!r} (known: {", ".join(sorted(profiles))})')
    unknown = set(profiles[task]) - set(CostWeights.names())
    if unknown:
        raise ValueError(f'task {task!r} sets unknown cost weights {sorted(unknown)}')
    return CostWeights(**profiles[task])


def adjust_from_memory(bag: str, adjust: list[str], checkpoint: str, work_dir, tag, critic_init: str | None = None,
                       critic_epochs: int = 100, tuning=None, keep_if_better=None, log=print) -> dict:
    """The adjustment after surprise (run in a worker thread), from the short-term memory saved to `bag`:
    the world model's predictor first (fine-tuned as `tuning` says, kept only if it predicts the most recent
    transitions better by the margin of `keep_if_better`: adjust_world_model.FineTuning and KeepIfBetter, None for
    their defaults), then the
    critic, in the latent space of the model that will be in service. Returns {'world_model': summary} or
    {'world_model_kept': why the current model stays}, and {'critic': summary}, for what `adjust` names."""
    from jepa_configurator.adjust_world_model import AdjustmentError, adjust_world_model
    from jepa_configurator.train_critic import critic_from_bags
    work_dir = Path(work_dir)
    result = {}
    if 'world_model' in adjust:
        try:
            out = work_dir / 'world_model' / f'world_model-{tag}.pt'
            result['world_model'] = adjust_world_model([bag], checkpoint, str(out), tuning,
                                                       keep_if_better=keep_if_better, log=log)
        except AdjustmentError as exc:
            result['world_model_kept'] = str(exc)
    if 'critic' in adjust:
        for_model = result['world_model']['model_id'] if 'world_model' in result else ''
        result['critic'] = critic_from_bags([bag], str(work_dir / 'critic' / f'critic-{tag}.pt'), epochs=critic_epochs,
                                            init=critic_init, log=log, for_model=for_model)
    return result
