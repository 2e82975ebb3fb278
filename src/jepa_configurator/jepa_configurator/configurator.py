"""The configurator's core (ROS-free): the task profiles (cost weights, the actor's higher level and what surprise
may adjust, per task), the surprise monitor that decides when planning has stopped producing the outcomes the
world model predicts, the hand-reading check that decides when perception no longer sees the arm where its joints
put it, and the adjustments that follow."""
import math
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from jepa_actor.actor import SKILLS
from jepa_common.settings import setting
from jepa_cost.cost import CostWeights
from jepa_world_model.model import read_checkpoint

# What a task may adjust: the world model's predictor and the critic after sustained surprise, the encoder
# (perception re-calibrated) after the hand-reading check fires.
ADJUSTMENTS = ('critic', 'encoder', 'world_model')


@dataclass
class TaskProfile:
    """What a task sets: the cost weights (for the cost node and the actor), the actor's higher level (`levels` 2:
    the learned one; or a scripted `skill`), and what sustained surprise in the task may adjust (None: the
    configurator's `adjust`)."""
    weights: CostWeights = field(default_factory=CostWeights)
    skill: str = ''
    adjust: tuple[str, ...] | None = None
    levels: int = 1

    def __post_init__(self):
        if self.skill not in SKILLS:
            raise ValueError(f'skill must be one of {SKILLS}, got {self.skill!r}')
        if self.levels not in (1, 2) or (self.skill and self.levels != 1):
            raise ValueError(f'levels must be 1 or 2, and 1 with a scripted skill, got levels {self.levels} with '
                             f'skill {self.skill!r}')
        if self.adjust is not None:
            self.adjust = tuple(a for a in self.adjust if a)
            unknown = set(self.adjust) - set(ADJUSTMENTS)
            if unknown:
                raise ValueError(f'unknown adjustments {sorted(unknown)} (known: {ADJUSTMENTS})')


# The tasks and their profiles; the configurator node declares them as `tasks.<task>.<weight>`, `skills.<task>`
# and `task_adjust.<task>`, so a params file overrides only what differs.
TASK_PROFILES = {
    # Plan towards the goal image through the world model: `energy`, the displacement the model's effector map
    # reads, and `latent`, the whole latent. No profile weighs or retrains the critic: no run has shown it change
    # an outcome (`tasks.<task>.critic` and `task_adjust.<task>` turn it on).
    'reach': TaskProfile(CostWeights()),
    # Push: the learned higher level (levels 2) plans macro-actions to where the goal image's latent is, the cube's
    # position in it weighing most (ActorConfig.subgoal_latent 1, subgoal_energy 0.1), and the control level plans
    # towards its sub-goals with reach's weights. Contact makes surprise routine in a push (its outcome varies
    # beyond what a one-step predictor models), so a push's surprise only saves the memory and adjusts nothing.
    'push': TaskProfile(CostWeights(), adjust=(), levels=2),
    # The one_level ablation of push: one level, with the weights that push best without a higher level (the whole
    # latent, which holds the cube, weighs most).
    'push_one_level': TaskProfile(CostWeights(energy=0.1, latent=1.0, effort=0.02), adjust=()),
    # The scripted_skill reference: the hand-written push skill sets hand goals, and the `hand` term, from the
    # arm's kinematics, is the only task term; the world model's predictions do not enter its decisions
    # (tests/test_actor_world_model_matters.py). Adjusts nothing, as push.
    'push_skill': TaskProfile(CostWeights(energy=0.0, latent=0.0, hand=1.0), skill='push', adjust=()),
    # Hold still. The agent is not acting (an evaluation's references drive the arm, resets teleport it): nothing
    # it planned missed, so its surprise adjusts nothing.
    'idle': TaskProfile(CostWeights(energy=0.0, latent=0.0, effort=1.0), adjust=()),
}
TASKS = tuple(TASK_PROFILES)


def task_weights(task: str, overrides: dict[str, dict[str, float]] | None = None) -> CostWeights:
    """The cost weights of a task: its profile's, with {task: {weight name: value}} overrides (a params file's
    `tasks`) on top."""
    if task not in TASK_PROFILES:
        raise ValueError(f'unknown task {task!r} (known: {", ".join(TASKS)})')
    changes = (overrides or {}).get(task) or {}
    unknown = set(changes) - set(CostWeights.names())
    if unknown:
        raise ValueError(f'task {task!r} sets unknown cost weights {sorted(unknown)}')
    return CostWeights(**{**TASK_PROFILES[task].weights.as_dict(), **changes})


def task_skill(task: str, overrides: dict[str, str] | None = None) -> str:
    """The actor's scripted higher level in a task: its profile's, or {task: skill} overrides (a params file's
    `skills`)."""
    return _profile_value(task, 'skill', overrides)


def task_levels(task: str, overrides: dict[str, int] | None = None) -> int:
    """The actor's levels in a task: its profile's, or {task: levels} overrides (a params file's `levels`)."""
    return _profile_value(task, 'levels', overrides)


def _profile_value(task: str, name: str, overrides: dict | None):
    if task not in TASK_PROFILES:
        raise ValueError(f'unknown task {task!r} (known: {", ".join(TASKS)})')
    profile = TASK_PROFILES[task]
    value = (overrides or {}).get(task, getattr(profile, name))
    return getattr(replace(profile, **{name: value}), name)   # TaskProfile checks it


@dataclass
class SurpriseMonitor:
    """Decides when surprise is sustained: normalized prediction errors above `threshold` times `baseline`, the
    error the model in service makes on its own held-out data (`expected_surprise`), at least `patience` in a
    row and spanning at least `min_span` seconds of the observations' stamps, with no silence longer than
    `max_gap` between two of them. Then it fires, at most once per `cooldown` seconds (of stamps): the plans
    keep failing to produce the predicted outcome, so the world model or the critic needs adjusting (learning
    only when planning alone does not do it).

    Relative, because what counts as surprising depends on the model: an absolute normalized error that one model
    reaches on ordinary steps another never reaches. Sustained over time and not only over callbacks, because a
    glitch the perception did not catch makes a burst of surprise as dense as the camera's rate, while a world
    that really works otherwise than predicted keeps surprising. A silence breaks the streak: when perception
    refuses frames, the surprise on either side of the gap is not one sustained episode.
    Only the model in service (`model_id`, when known) can be surprised: errors another model made (still in flight
    when a new one was installed) are not counted; with no model in service (`serve_none`: its checkpoint is
    unreadable) nothing is."""
    threshold: float = setting(5.0, 'surprising: a normalized one-step prediction error above this many times the '
                               'held-out error of the model in service (steps it predicts as well as its held-out data '
                               'stay far below)', (0.0, 1e6))
    patience: int = setting(5, 'consecutive surprising steps before adjusting...', (1, 100_000))
    min_span: float = setting(3.0, '...spanning at least this many s of their stamps (a glitch is brief)...',
                              (0.0, 3600.0))
    max_gap: float = setting(0.5, '...with no silence longer than this many s between two (refused frames break a '
                             'streak)', (0.0, 3600.0))
    cooldown: float = setting(30.0, 's of stamps between two adjustments', (0.0, 1e6))
    baseline: float = 1.0
    model_id: str | None = ''
    streak: int = 0
    fired: int = 0
    observed: int = 0
    surprising: int = 0
    other_model: int = 0
    _streak_start: float = math.nan
    _last_stamp: float = -math.inf
    _last_fired: float = -math.inf

    def __post_init__(self):
        if not (self.threshold > 0 and self.patience >= 1 and self.min_span >= 0 and self.max_gap > 0
                and self.cooldown >= 0 and self.baseline > 0):
            raise ValueError(f'surprise needs threshold > 0, patience >= 1, min_span >= 0, max_gap > 0, cooldown >= 0 '
                             f'and baseline > 0, got threshold {self.threshold}, patience {self.patience}, min_span '
                             f'{self.min_span}, max_gap {self.max_gap}, cooldown {self.cooldown}, baseline '
                             f'{self.baseline}')

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


@dataclass
class HandReadingCheck:
    """Decides when perception has drifted from the arm (a camera knocked, a scene that looks otherwise): the hand
    position the world model's effector map reads from each latent, against the one forward kinematics of the joint
    states measured at the latent's stamp. The map reads positions up to an offset, so each `window` of stamps is
    judged by its RMS gap after removing the window's own mean gap; a window counts only if the hand moved in it
    (`min_motion`: a still hand reads right up to an offset whatever perception does). A jump of the measured hand
    that no action makes (`max_jump`: a reset teleports the arm) ends a window: across it the gap would measure how
    far the linear map is from the encoder over the whole workspace, not whether perception drifted. It fires when
    the median of the last `windows` counted windows exceeds `threshold`: one window can be off through a glitch or
    an occlusion, a perception that drifted is off in most of them. At most once per `cooldown` s of stamps; a model put in
    service (`restart`) starts the count again. `drift_since` is when the drift began, as far as the windows tell:
    the start of the oldest window above the threshold among those of the first firing since the model in service
    came (the play a re-calibration learns from starts there).

    Prediction error cannot see this drift: the predictor still predicts latents from latents, and the plan still
    lands where it was predicted to; only the arm's own joints tell that the latents place the hand wrong."""
    enabled: bool = setting(True, 'watch the hand reading (false: never re-calibrate perception)')
    window: float = setting(5.0, 's of stamps per judged window', (0.1, 3600.0))
    min_motion: float = setting(0.02, 'm: a window counts only if the measured hand positions spread this much (RMS)',
                                (0.0, 1.0))
    max_jump: float = setting(0.1, 'm between two consecutive measured hand positions that ends a window (a reset)',
                              (0.0, 10.0))
    windows: int = setting(6, 'counted windows whose median gap is compared with the threshold', (1, 10_000))
    threshold: float = setting(0.03, 'm RMS: fires above this median gap (read less measured, offset removed)',
                               (0.0, 1.0))
    cooldown: float = setting(60.0, 's of stamps between two firings (one while a re-calibration runs starts '
                              'another after it, on the longer play, if it was refused)', (0.0, 1e6))
    min_play: float = setting(60.0, 's of play since the drift began that a re-calibration waits for (what it learns '
                              'from; the short-term memory\'s play_seconds must hold it)', (0.0, 3600.0))
    fired: int = 0
    counted: int = 0
    last_window: float = math.nan
    last_median: float = math.nan
    highest_median: float = math.nan
    drift_since: float = math.nan
    _samples: list = field(default_factory=list)
    _errors: deque = field(default_factory=deque)
    _window_start: float = math.nan
    _last_stamp: float = -math.inf
    _last_fired: float = -math.inf

    def __post_init__(self):
        if not (self.window > 0 and self.min_motion >= 0 and self.max_jump > 0 and self.windows >= 1
                and self.threshold > 0 and self.cooldown >= 0 and self.min_play >= 0):
            raise ValueError(f'the hand-reading check needs window > 0, min_motion >= 0, max_jump > 0, windows >= 1, '
                             f'threshold > 0, cooldown >= 0 and min_play >= 0, got window {self.window}, min_motion '
                             f'{self.min_motion}, max_jump {self.max_jump}, windows {self.windows}, threshold '
                             f'{self.threshold}, cooldown {self.cooldown}, min_play {self.min_play}')

    def restart(self) -> None:
        """Start counting again (a new model is in service: the gaps of the one it replaced say nothing about it)."""
        self._samples, self._errors, self._window_start, self.drift_since = [], deque(), math.nan, math.nan

    def observe(self, stamp: float, read: np.ndarray, measured: np.ndarray) -> bool:
        """One latent's hand reading and the measured hand position at its stamp (seconds; metres). True when the
        check fires; `last_window` is the gap of a window this sample closed (nan if none was judged)."""
        self.last_window = math.nan
        if not self.enabled or not (np.all(np.isfinite(read)) and np.all(np.isfinite(measured))):
            return False
        if stamp < self._last_stamp:  # time restarted (a replay, a simulator reset): so do windows and cooldown
            self.restart()
            self._last_fired = -math.inf
        self._last_stamp = stamp
        read, measured = np.asarray(read, float), np.asarray(measured, float)
        fired = False
        jumped = bool(self._samples) and np.linalg.norm(measured - self._samples[-1][3:]) > self.max_jump
        if jumped or not stamp - self._window_start < self.window:
            fired = self._close_window(stamp)
            self._samples, self._window_start = [], stamp
        self._samples.append(np.concatenate([read - measured, measured]))  # the gap, and where the hand was
        return fired

    def _close_window(self, stamp: float) -> bool:
        if len(self._samples) < 3:
            return False
        samples = np.asarray(self._samples)
        gaps, measured = samples[:, :3], samples[:, 3:]
        if np.sqrt(((measured - measured.mean(0)) ** 2).sum(1).mean()) < self.min_motion:
            return False
        self.counted += 1
        self.last_window = float(np.sqrt(((gaps - gaps.mean(0)) ** 2).sum(1).mean()))
        self._errors.append((self._window_start, self.last_window))
        while len(self._errors) > self.windows:
            self._errors.popleft()
        if len(self._errors) < self.windows:
            self.last_median = math.nan
            return False
        self.last_median = float(np.median([error for _, error in self._errors]))
        self.highest_median = self.last_median if math.isnan(self.highest_median) else \
            max(self.highest_median, self.last_median)
        if self.last_median > self.threshold and stamp - self._last_fired >= self.cooldown:
            self.fired += 1
            self._last_fired = stamp
            if math.isnan(self.drift_since):
                self.drift_since = min(start for start, error in self._errors if error > self.threshold)
            self._errors.clear()
            return True
        return False


def held_out_one_step_error(checkpoint: dict) -> float | None:
    """The normalized one-step prediction error a world model made on its held-out windows when it was trained
    (checkpoint metrics: validation normalized_error at horizon 1), from the checkpoint as
    model.read_checkpoint returns it; None when the checkpoint does not record it. Adjusted checkpoints carry
    their original's metrics: same encoder, same scale."""
    errors = (checkpoint.get('metrics') or {}).get('validation', {}).get('normalized_error') or []
    first = float(errors[0]) if errors else math.nan
    return first if math.isfinite(first) and first > 0 else None


def expected_surprise(checkpoint_path: str) -> tuple[float | None, str]:
    """held_out_one_step_error of the checkpoint at `checkpoint_path`, and the model's id. Raises CheckpointError
    for an unreadable checkpoint."""
    checkpoint, model_id = read_checkpoint(checkpoint_path)
    return held_out_one_step_error(checkpoint), model_id


def adjust_from_memory(bag: str, adjust: list[str], checkpoint: str, work_dir, tag, critic_init: str | None = None,
                       critic_tuning=None, tuning=None, keep_if_better=None, log=print) -> dict:
    """The adjustment after surprise (run in a worker thread), from the short-term memory saved to `bag`: the world
    model's predictor first, then the critic, in the latent space of the model that will be in service. Each is
    kept only if it predicts the most recent transitions, held out from its training, better than what is in
    service by a margin noise cannot produce (`keep_if_better`, adjust_world_model.KeepIfBetter): the predictor
    fine-tuned as `tuning` says (adjust_world_model.FineTuning), the critic retrained as `critic_tuning` says
    (train_critic.CriticTuning) from `critic_init`, the critic in service (None: none is, and the retrained one
    must beat no critic at all). None for any of the three: its defaults.

    Returns, for what `adjust` names: {'world_model': summary} or {'world_model_kept': why the model in service
    stays}; {'critic': summary} or {'critic_kept': why the critic in service stays}. A critic that stays while the
    world model changes is saved again for the new model (its latent space is the same: the encoder is unchanged),
    as {'critic_relabelled': summary}, so that it stays in service beside the new model."""
    from jepa_configurator.adjust_world_model import AdjustmentError, adjust_world_model
    from jepa_configurator.train_critic import relabel_critic, retrain_critic
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
        out = str(work_dir / 'critic' / f'critic-{tag}.pt')
        try:
            result['critic'] = retrain_critic([bag], out, critic_init, critic_tuning, keep_if_better,
                                              for_model=for_model, log=log)
        except AdjustmentError as exc:
            result['critic_kept'] = str(exc)
            if for_model and critic_init:
                result['critic_relabelled'] = relabel_critic(critic_init, out, for_model)
    return result


def recalibrate_from_play(bag: str, checkpoint: str, work_dir, tag, tuning=None, keep_if_better=None,
                          stop=None) -> dict:
    """The adjustment after the hand-reading check fired (run in a worker thread): the encoder of `checkpoint`
    re-calibrated on the play bag `bag` (adjust_encoder, as `tuning` says; None: EncoderTuning's defaults) and
    written to work_dir/world_model/. Returns {'encoder': summary}, or {'encoder_kept': why the model in service
    stays} when the re-calibrated encoder does not read the held-out play better by `keep_if_better`'s margin,
    breaks the predictor, or `stop` (a threading.Event) was set before it finished."""
    from jepa_configurator.adjust_encoder import adjust_encoder
    from jepa_configurator.adjust_world_model import AdjustmentError
    out = Path(work_dir) / 'world_model' / f'encoder-{tag}.pt'
    try:
        return {'encoder': adjust_encoder([bag], checkpoint, str(out), tuning, keep_if_better, stop=stop)}
    except AdjustmentError as exc:
        return {'encoder_kept': str(exc)}
