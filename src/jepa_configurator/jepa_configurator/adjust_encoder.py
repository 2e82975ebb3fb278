"""`jepa adjust-encoder --bag BAG... [--checkpoint CKPT] --out OUT`: re-calibrate perception where the world moved
under it (a camera knocked a few centimetres, a recoloured object), from the robot's own recent play.

When the camera or the scene's look changes, the predictor still predicts; what breaks is where the encoder puts
the hand in the latent, so the cost's effector map (a linear read-out: latent -> hand position, up to an offset)
misreads distances, by an error that depends on where the hand is and that no linear refit of the map undoes
(research/adaptation/LOG.md §4). So only the encoder is fine-tuned; the effector map, the predictor and every other
head stay as trained, and the encoder learns to put the new images where they read right, from what the robot has
without any external sensor:
- the hand positions its joints measure (forward kinematics of the recorded joint states): the frozen effector map
  must read them from the latents, up to one learned offset;
- its own actions: the frozen predictor's open-loop rollout from the first latent must land on the later ones
  (the training's prediction term, targets detached);
- an anchor: the latents may not move in the directions the effector map does not read (the cube, the scene),
  so the predictor, the goal latents and everything learned in the latent space keep their meaning.
The adjusted model is written only if it reads the hand better on the most recent episodes, held out from
fine-tuning, by a margin that noise cannot produce (`KeepIfBetter`), without breaking the predictor on them.

The bags are play bags as `jepa train` reads them (camera, joint states, actions), decoded as the checkpoint's arm.
"""
import argparse
import copy
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from jepa_common.cli import print_summary
from jepa_common.settings import check_spans, setting
from jepa_configurator.adjust_world_model import AdjustmentError, KeepIfBetter
from jepa_world_model.bag_layout import add_arm_arguments
from jepa_world_model.dataset import BagError, Ticks, bag_kinematics, expand_bags
from jepa_world_model.model import CheckpointError, WorldModel, read_checkpoint, save_checkpoint
from jepa_world_model.train import TrainConfig, bags_for_checkpoint, git_commit


@dataclass
class EncoderTuning:
    """How the encoder is fine-tuned and judged."""
    steps: int = setting(1200, 'Adam steps of the encoder\'s fine-tuning', (1, 1_000_000))
    lr: float = setting(3e-4, 'learning rate of the fine-tuning', (0.0, 1.0))
    batch: int = setting(16, 'windows of consecutive frames per step', (1, 4096))
    window: int = setting(4, 'frames per window (the prediction term rolls out window - 1 steps)', (2, 64))
    holdout: float = setting(0.25, 'newest share of the frames (whole episodes) held out to judge the result',
                             (0.0, 1.0))
    anchor: float = setting(1.0, 'weight of the latents\' change in the directions the effector map does not read',
                            (0.0, 1e6))
    max_prediction_ratio: float = setting(2.0, 'refused if the held-out one-step prediction error grows by more '
                                          'than this factor', (1.0, 1e6))

    def __post_init__(self):
        check_spans(self)
        if not 0 < self.holdout < 1 or not self.lr > 0:
            raise ValueError(f'encoder tuning needs 0 < holdout < 1 and lr > 0, got {self}')


@dataclass
class Episode:
    """One stretch of consecutive control ticks: frames (T + 1, S, S, 3) uint8 at the model's size, the actions
    taken between them (T, A), and the hand positions the joints measured at the frames (T + 1, 3), metres."""
    frames: np.ndarray
    actions: np.ndarray
    hand_positions: np.ndarray


def episodes_from_ticks(ticks: Ticks, kinematics, min_length: int) -> list[Episode]:
    """The ticks' segments of at least `min_length` frames as episodes, the hand from the arm joints' kinematics."""
    arm = len(kinematics.arm_joints)
    episodes = []
    for segment in np.unique(ticks.segment):
        rows = np.flatnonzero(ticks.segment == segment)
        if len(rows) >= min_length:
            episodes.append(Episode(np.asarray(ticks.images[rows]), np.asarray(ticks.actions[rows[:-1]]),
                                    kinematics.fk(np.asarray(ticks.proprio[rows, :arm], dtype=float))))
    return episodes


def encode_episodes(model: WorldModel, episodes: list[Episode]) -> list[torch.Tensor]:
    """Per episode, the encoder's latents of its frames (T + 1, D)."""
    with torch.no_grad():
        return [model.encode(e.frames) for e in episodes]


def readings(model: WorldModel, episodes: list[Episode], encoded: list[torch.Tensor] | None = None) -> list[np.ndarray]:
    """Per episode, the hand positions (T + 1, 3) the effector map reads from the encoder's latents (`encoded`, if
    the caller has them already), up to an offset, metres."""
    scale = model.action_scale[:model.config.translation_dims]
    with torch.no_grad():
        return [(model.inverse_translation(z) * scale).numpy()
                for z in (encoded if encoded is not None else encode_episodes(model, episodes))]


def reading_offset(model: WorldModel, episodes: list[Episode], encoded: list[torch.Tensor] | None = None) -> np.ndarray:
    """The mean of (hand position read - hand position measured) over the episodes' frames, metres."""
    return np.concatenate([r - e.hand_positions
                           for r, e in zip(readings(model, episodes, encoded), episodes)]).mean(0)


def reading_errors(model: WorldModel, offset: np.ndarray, episodes: list[Episode]) -> np.ndarray:
    """Per frame of `episodes` (time order), the squared gap (m^2) between the hand position the effector map reads,
    less `offset`, and the one measured."""
    return np.concatenate([((r - offset - e.hand_positions) ** 2).sum(1)
                           for r, e in zip(readings(model, episodes), episodes)])


def prediction_errors(model: WorldModel, episodes: list[Episode]) -> np.ndarray:
    """Per transition, the one-step normalized prediction error in the encoder's latents."""
    errors = []
    with torch.no_grad():
        for e in episodes:
            latents = model.encode(e.frames)
            errors.append(model.normalized_error(model.predict(latents[:-1], torch.as_tensor(e.actions)),
                                                 latents[1:]).numpy())
    return np.concatenate(errors)


def split(episodes: list[Episode], holdout: float) -> tuple[list[Episode], list[Episode]]:
    """(older, newest): the newest `holdout` share of the frames, cut at an episode boundary (at least one whole
    episode held out, at least one kept)."""
    if len(episodes) < 2:
        raise AdjustmentError(f'{len(episodes)} episode(s): at least one to learn from and one to judge on are needed')
    wanted = holdout * sum(len(e.actions) for e in episodes)
    held, n_held = 0, 0
    while n_held < len(episodes) - 1 and held < wanted:
        n_held += 1
        held += len(episodes[-n_held].actions)
    return episodes[:-n_held], episodes[-n_held:]


def outside_map(model: WorldModel) -> torch.Tensor:
    """(D, D) the projection onto the latent directions the effector map does not read."""
    weight = model.inverse_translation.weight.detach()
    return torch.eye(weight.shape[1]) - weight.T @ torch.linalg.solve(weight @ weight.T, weight)


def loss_terms(candidate: WorldModel, frames, actions, hand_positions, in_service_latents, offset, outside,
               tuning: EncoderTuning, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    """The fine-tuning objective on a batch of windows: frames (B, L, S, S, 3), actions (B, L - 1, A), the hand
    positions (B, L, 3) and the latents the encoder in service gives those frames (B, L, D)."""
    batch, length = frames.shape[:2]
    states = candidate.encode(frames.flatten(0, 1)).view(batch, length, -1)
    targets = states.detach()
    state, prediction, weights = states[:, 0], 0.0, 0.0
    for k in range(length - 1):
        state = candidate.predict(state, actions[:, k])
        prediction = prediction + cfg.discount ** k * (state - targets[:, k + 1]).pow(2).mean()
        weights += cfg.discount ** k
    prediction = prediction / weights
    scale = candidate.action_scale[:candidate.config.translation_dims]
    read = candidate.inverse_translation(states.flatten(0, 1))
    position = (read - (hand_positions.flatten(0, 1) + offset) / scale).pow(2).mean()
    anchor = ((states - in_service_latents).flatten(0, 1) @ outside).pow(2).mean()
    loss = prediction + cfg.idm_weight * position + tuning.anchor * anchor
    return loss, {'prediction': float(prediction.detach()), 'position': float(position.detach()),
                  'anchor': float(anchor.detach())}


def fine_tune_encoder(model: WorldModel, episodes: list[Episode], tuning: EncoderTuning | None = None,
                      keep_if_better: KeepIfBetter | None = None, seed: int = 0,
                      stop: threading.Event | None = None) -> tuple[WorldModel, dict]:
    """(a copy of `model` with its encoder fine-tuned on `episodes` (time order), the verdict's figures);
    AdjustmentError when too few are held out to judge, the held-out hand reading does not improve by the margin,
    the held-out prediction error grows beyond `tuning.max_prediction_ratio`, or `stop` is set before the end (a
    node shutting down). `model` is left as it was."""
    tuning, keep_if_better = tuning or EncoderTuning(), keep_if_better or KeepIfBetter()
    started = time.monotonic()
    older, newest = split(episodes, tuning.holdout)
    keep_if_better.windows(sum(len(e.frames) for e in newest))  # too few to judge is known before training
    starts = [(i, t) for i, e in enumerate(older) for t in range(len(e.frames) - tuning.window + 1)]
    if not starts:
        raise AdjustmentError(f'no episode to learn from holds {tuning.window} consecutive frames')
    candidate = copy.deepcopy(model)
    candidate.requires_grad_(False)
    candidate.encoder.requires_grad_(True)
    in_service = encode_episodes(model, older)  # once: the anchor's targets and the offset in service
    offset_in_service = reading_offset(model, older, in_service)
    offset = torch.nn.Parameter(torch.as_tensor(offset_in_service, dtype=torch.float32))
    optimizer = torch.optim.Adam([*candidate.encoder.parameters(), offset], lr=tuning.lr)
    outside, cfg, span = outside_map(model), TrainConfig(), tuning.window - 1
    generator = np.random.default_rng(seed)
    terms = {}
    candidate.train()
    for _ in range(tuning.steps):
        if stop is not None and stop.is_set():
            raise AdjustmentError('the encoder\'s fine-tuning was stopped before it finished')
        picks = [starts[j] for j in generator.integers(len(starts), size=tuning.batch)]
        frames = torch.as_tensor(np.stack([older[i].frames[t:t + tuning.window] for i, t in picks]))
        actions = torch.as_tensor(np.stack([older[i].actions[t:t + span] for i, t in picks]), dtype=torch.float32)
        positions = torch.as_tensor(np.stack([older[i].hand_positions[t:t + tuning.window] for i, t in picks]),
                                    dtype=torch.float32)
        anchors = torch.stack([in_service[i][t:t + tuning.window] for i, t in picks])
        loss, terms = loss_terms(candidate, frames, actions, positions, anchors, offset, outside, tuning, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    candidate.eval()
    candidate.requires_grad_(False)
    figures = keep_if_better.judge(reading_errors(model, offset_in_service, newest),
                                   reading_errors(candidate, reading_offset(candidate, older), newest),
                                   'the fine-tuned encoder')
    before, after = (float(prediction_errors(m, newest).mean()) for m in (model, candidate))
    if after > tuning.max_prediction_ratio * before:
        raise AdjustmentError(f'the fine-tuned encoder reads the hand better but breaks the predictor: held-out '
                              f'one-step error {before:.4g} -> {after:.4g} (more than x{tuning.max_prediction_ratio}); '
                              'the one in service stays')
    return candidate, {'episodes': len(older), 'held_out_episodes': len(newest), **figures,
                       'prediction_error_before': before, 'prediction_error_after': after, 'last_terms': terms,
                       **asdict(tuning), 'seconds': round(time.monotonic() - started, 1)}


def adjust_encoder(bags: list[str], checkpoint: str, out: str, tuning: EncoderTuning | None = None,
                   keep_if_better: KeepIfBetter | None = None, arm: str | None = None, urdf: str | None = None,
                   camera_topic: str | None = None, prog: str = 'jepa adjust-encoder',
                   stop: threading.Event | None = None) -> dict:
    """Fine-tune the encoder of `checkpoint` ('' = the shipped model) on the play bags `bags` (oldest first; decoded
    as the checkpoint's arm, or as add_arm_arguments' `arm`, `urdf` and `camera_topic` say) and write it to `out`;
    the summary dict. AdjustmentError when it is refused or stopped (fine_tune_encoder), BagError, CheckpointError,
    ValueError."""
    tuning = tuning or EncoderTuning()
    args = argparse.Namespace(bag=list(bags), checkpoint=checkpoint, arm=arm, urdf=urdf, camera_topic=camera_topic)
    path, model, model_id, layout, ticks = bags_for_checkpoint(args, prog)
    kinematics = bag_kinematics(expand_bags(args.bag)[0], layout)
    adjusted, figures = fine_tune_encoder(model, episodes_from_ticks(ticks, kinematics, tuning.window), tuning,
                                          keep_if_better, stop=stop)
    original, _ = read_checkpoint(path)
    adjustment = {'kind': 'encoder', 'adjusted_from': model_id, 'git_commit': git_commit(),
                  'bags': [s['path'] for s in ticks.sources],
                  'bags_sha256': [s['sha256'] for s in ticks.sources], **figures,
                  'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    provenance = {**original['provenance'],
                  'adjustments': [*original['provenance'].get('adjustments', []), adjustment]}
    new_id = save_checkpoint(adjusted, out, provenance, original['metrics'])
    return {'out': str(out), 'model_id': new_id, **{k: v for k, v in adjustment.items() if k != 'date'}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='jepa adjust-encoder', description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', action='append', required=True,
                        help='play bag, folder or glob (repeatable), oldest first: the newest are held out to judge')
    parser.add_argument('--checkpoint', default='', help='the world model to adjust (default: the shipped one)')
    parser.add_argument('--out', required=True, help='adjusted checkpoint to write (only if it is better)')
    parser.add_argument('--steps', type=int, default=EncoderTuning.steps, help='Adam steps of the fine-tuning')
    parser.add_argument('--lr', type=float, default=EncoderTuning.lr, help='learning rate of the fine-tuning')
    parser.add_argument('--max-prediction-ratio', type=float, default=EncoderTuning.max_prediction_ratio,
                        help='refuse an encoder that makes the held-out one-step prediction error grow by more than '
                             'this factor')
    add_arm_arguments(parser, for_checkpoint=True)
    args = parser.parse_args(argv)
    try:
        tuning = EncoderTuning(steps=args.steps, lr=args.lr, max_prediction_ratio=args.max_prediction_ratio)
    except ValueError as exc:
        parser.error(str(exc))
    if Path(args.out).exists():
        parser.error(f'--out {args.out} exists: a checkpoint is never overwritten, choose another path')
    return print_summary(parser.prog, lambda: adjust_encoder(args.bag, args.checkpoint, args.out, tuning, arm=args.arm,
                                                             urdf=args.urdf, camera_topic=args.camera_topic,
                                                             prog=parser.prog),
                         (AdjustmentError, BagError, CheckpointError, ValueError))


if __name__ == '__main__':
    sys.exit(main())
