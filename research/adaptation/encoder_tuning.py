"""Re-calibrating perception: the encoder fine-tuned on the perturbed world's own frames, everything after it frozen.

Why the encoder (LOG.md §1-4): under a moved camera or a recoloured cube the predictor still predicts; what breaks is
where the encoder puts the hand in the latent, so the cost's effector map (a linear map, latent -> hand position up to
an offset) misreads distances, in a way that depends on where the hand is, which no linear refit of the map undoes.
So the map, the predictor and every other head stay as trained and the encoder learns to put the perturbed images
where they read right, from what the agent has without a simulator:
- the hand positions its joints measured (forward kinematics): the frozen effector map must read them from the
  latents, up to one offset (a steps-only target is too noisy: a 0.7-cm step against a 0.5-cm reading error);
- its own actions: the frozen predictor's open-loop rollout from the first latent must land on the later ones
  (the training's prediction term, targets detached);
- the training's variance-covariance terms against collapse.
Kept only if the held-out reading error (the newest episodes', the offset fitted on the older) beats the encoder in
service by KeepIfBetter's margin.

    # offline, on the episodes adapt_in_process.py --save-episodes kept:
    ../../.venv/bin/python encoder_tuning.py camera_moved_on.npz --train 5 --steps 300 --lr 3e-4
"""
import argparse
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jepa_configurator.adjust_world_model import AdjustmentError, KeepIfBetter
from jepa_world_model.model import default_checkpoint_path, load_checkpoint
from jepa_world_model.train import TrainConfig, variance_covariance


@dataclass
class EncoderTuning:
    steps: int = 300
    lr: float = 3e-4
    batch: int = 16           # windows per step
    window: int = 4           # frames per window (window - 1 transitions)
    holdout: float = 0.25     # newest share of the transitions that judges the result
    vicreg: bool = False      # the training's variance-covariance terms on each batch
    anchor: float = 1.0       # weight of the latents' change outside what the effector map reads (0: free)
    max_prediction_ratio: float = 2.0  # refused if the held-out prediction error grows more than this


@dataclass
class Episode:
    """What one episode leaves: frames (T + 1, S, S, 3) uint8 at the model's size, actions (T, A), the hand positions
    the joints measured at the frames (T + 1, 3, m)."""
    frames: np.ndarray
    actions: np.ndarray
    hand_positions: np.ndarray


def save_played(episodes: list, path: Path) -> None:
    np.savez_compressed(path, lengths=[len(e.actions) for e in episodes],
                        frames=np.concatenate([e.frames for e in episodes]),
                        actions=np.concatenate([e.actions for e in episodes]),
                        hand_positions=np.concatenate([e.hand_positions for e in episodes]))


def load_played(path: Path) -> list:
    data = np.load(path)
    episodes, f, a = [], 0, 0
    for n in data['lengths']:
        episodes.append(Episode(data['frames'][f:f + n + 1], data['actions'][a:a + n],
                                data['hand_positions'][f:f + n + 1]))
        f, a = f + n + 1, a + n
    return episodes


def readings(model, episodes: list) -> list:
    """Per episode, the hand positions the effector map reads from the encoder's latents (T + 1, 3), up to an
    offset, m."""
    scale = model.action_scale[:model.config.translation_dims]
    with torch.no_grad():
        return [(model.inverse_translation(model.encode(e.frames)) * scale).numpy() for e in episodes]


def reading_offset(model, episodes: list) -> np.ndarray:
    return np.concatenate([r - e.hand_positions for r, e in zip(readings(model, episodes), episodes)]).mean(0)


def reading_errors(model, older: list, newest: list) -> np.ndarray:
    """Per frame of `newest` (time order), the squared gap (m^2) between the hand position the map reads and the one
    measured, the offset taken from `older`."""
    offset = reading_offset(model, older)
    return np.concatenate([((r - offset - e.hand_positions) ** 2).sum(1)
                           for r, e in zip(readings(model, newest), newest)])


def prediction_errors(model, episodes: list) -> np.ndarray:
    """Per transition, the one-step normalized prediction error in the encoder's latents."""
    with torch.no_grad():
        errors = []
        for e in episodes:
            latents = model.encode(e.frames)
            errors.append(model.normalized_error(model.predict(latents[:-1], torch.as_tensor(e.actions)),
                                                 latents[1:]).numpy())
    return np.concatenate(errors)


def split(episodes: list, holdout: float) -> tuple[list, list]:
    """(older, newest): the newest `holdout` share of the frames, cut at an episode boundary (at least one whole
    episode held out, at least one kept)."""
    if len(episodes) < 2:
        raise AdjustmentError(f'{len(episodes)} episode(s): one to learn from and one to judge on are needed')
    counts = np.array([len(e.actions) for e in episodes])
    wanted = holdout * counts.sum()
    held, n_held = 0, 0
    while n_held < len(episodes) - 1 and held < wanted:
        n_held += 1
        held += counts[-n_held]
    return episodes[:-n_held], episodes[-n_held:]


def outside_map(model) -> torch.Tensor:
    """(D, D) the projection onto the latent directions the effector map does not read."""
    weight = model.inverse_translation.weight.detach()
    return torch.eye(weight.shape[1]) - weight.T @ torch.linalg.solve(weight @ weight.T, weight)


def loss_terms(model, frames, actions, hand_positions, offset, cfg: TrainConfig, tuning: EncoderTuning,
               in_service=None, outside=None) -> tuple[torch.Tensor, dict]:
    batch, length = frames.shape[:2]
    states = model.encode(frames.flatten(0, 1)).view(batch, length, -1)
    targets = states.detach()
    state, prediction, weights = states[:, 0], 0.0, 0.0
    for k in range(length - 1):
        state = model.predict(state, actions[:, k])
        prediction = prediction + cfg.discount ** k * (state - targets[:, k + 1]).pow(2).mean()
        weights += cfg.discount ** k
    prediction = prediction / weights
    scale = model.action_scale[:model.config.translation_dims]
    read = model.inverse_translation(states.flatten(0, 1))
    position = (read - (hand_positions.flatten(0, 1) + offset) / scale).pow(2).mean()
    variance, covariance = variance_covariance(states.flatten(0, 1))
    loss = prediction + cfg.idm_weight * position
    if tuning.vicreg:
        loss = loss + cfg.var_weight * variance + cfg.cov_weight * covariance
    anchor = torch.zeros(())
    if tuning.anchor:
        with torch.no_grad():
            before = in_service.encode(frames.flatten(0, 1))
        anchor = ((states.flatten(0, 1) - before) @ outside).pow(2).mean()
        loss = loss + tuning.anchor * anchor
    return loss, {k: float(v.detach()) for k, v in (('prediction', prediction), ('position', position),
                                                   ('variance', variance), ('anchor', anchor))}


def fine_tune_encoder(model, episodes: list, tuning: EncoderTuning, keep: KeepIfBetter, seed: int = 0) -> tuple:
    """(a copy of `model` with its encoder fine-tuned, the record); AdjustmentError (from keep.judge) when the
    held-out reading error does not improve by the margin."""
    t0 = time.monotonic()
    older, newest = split(episodes, tuning.holdout)
    cfg = TrainConfig()
    candidate = copy.deepcopy(model)
    candidate.train()
    for parameter in candidate.parameters():
        parameter.requires_grad_(False)
    for parameter in candidate.encoder.parameters():
        parameter.requires_grad_(True)
    offset = torch.nn.Parameter(torch.as_tensor(reading_offset(model, older), dtype=torch.float32))
    optimizer = torch.optim.Adam([*candidate.encoder.parameters(), offset], lr=tuning.lr)
    generator = np.random.default_rng(seed)
    starts = [(i, t) for i, e in enumerate(older) for t in range(len(e.actions) - tuning.window + 2)]
    span = tuning.window - 1
    outside = outside_map(model)
    last = {}
    for _ in range(tuning.steps):
        picks = [starts[j] for j in generator.integers(len(starts), size=tuning.batch)]
        frames = torch.as_tensor(np.stack([older[i].frames[t:t + tuning.window] for i, t in picks]))
        actions = torch.as_tensor(np.stack([older[i].actions[t:t + span] for i, t in picks]), dtype=torch.float32)
        positions = torch.as_tensor(np.stack([older[i].hand_positions[t:t + tuning.window] for i, t in picks]),
                                    dtype=torch.float32)
        loss, last = loss_terms(candidate, frames, actions, positions, offset, cfg, tuning, model, outside)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    candidate.eval()
    candidate.requires_grad_(False)
    figures = keep.judge(reading_errors(model, older, newest), reading_errors(candidate, older, newest),
                         'the fine-tuned encoder')
    figures['prediction_error_before'], figures['prediction_error_after'] = (
        float(prediction_errors(m, newest).mean()) for m in (model, candidate))
    if figures['prediction_error_after'] > tuning.max_prediction_ratio * figures['prediction_error_before']:
        raise AdjustmentError(f'the fine-tuned encoder reads the hand better but its latents break the predictor: '
                              f'held-out one-step error {figures["prediction_error_before"]:.4g} -> '
                              f'{figures["prediction_error_after"]:.4g}; the one in service stays')
    return candidate, {'episodes_trained': len(older), 'episodes_held_out': len(newest), 'last_terms': last,
                       'train_seconds': round(time.monotonic() - t0, 1), **figures}


def main() -> int:
    parser = argparse.ArgumentParser(description='the encoder fine-tuned offline on saved perturbed episodes')
    parser.add_argument('episodes', type=Path)
    parser.add_argument('--train', type=int, default=5, help='episodes to learn from (the next ones judge)')
    parser.add_argument('--test', type=int, default=10, help='episodes after them to measure on')
    parser.add_argument('--steps', type=int, default=EncoderTuning.steps)
    parser.add_argument('--lr', type=float, default=EncoderTuning.lr)
    parser.add_argument('--vicreg', action='store_true')
    parser.add_argument('--anchor', type=float, default=EncoderTuning.anchor)
    parser.add_argument('--checkpoint', type=Path, default=default_checkpoint_path())
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = load_checkpoint(args.checkpoint)
    episodes = load_played(args.episodes)
    learn, test = episodes[:args.train], episodes[args.train:args.train + args.test]
    tuning = EncoderTuning(args.steps, args.lr, vicreg=args.vicreg, anchor=args.anchor)
    try:
        candidate, record = fine_tune_encoder(model, learn, tuning, KeepIfBetter())
        print('kept', json.dumps(record))
    except AdjustmentError as exc:
        print('refused', exc)
        return 0
    for name, m in (('in service', model), ('fine-tuned', candidate)):
        errors = reading_errors(m, learn, test)
        start_read = [np.linalg.norm(r[0] - r[-1]) for r in readings(m, test)]
        start_true = [np.linalg.norm(e.hand_positions[0] - e.hand_positions[-1]) for e in test]
        print(f'{name}: test reading error RMS {100 * np.sqrt(errors.mean()):.2f} cm; first-to-last distance read / '
              f'measured {np.sum(start_read) / np.sum(start_true):.2f}; prediction error '
              f'{prediction_errors(m, test).mean():.4f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
