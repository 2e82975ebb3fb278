"""Evaluation of a world model on held-out bags, side by side with two baselines measured in the same run.

`jepa eval-model --ckpt CKPT --bag BAG [--bag BAG ...] --json OUT`

- JEPA: open-loop latent rollout (z = 0, as used for planning) from the embedding of the first frame.
- copy-last: the future state is the current state.
- generative: the same encoder and predictor architecture plus a pixel decoder, trained here on the
  checkpoint's training bags for the same wall-clock budget the JEPA trained for, to reconstruct the frame
  and predict future frames in pixel space.

All errors are squared errors averaged over dimensions and divided by the mean per-dimension variance of the
targets over the held-out windows (1 ~ as far off as a random held-out state). The headline `generative`
numbers encode the baseline's predicted frames with the JEPA encoder and measure them in the JEPA space,
so all three rows share one space and one normalization; the baseline's error in its own (pixel) space,
with copy-last in pixel space for scale, is reported next to them.

A ridge-regression probe from the JEPA latent to the end-effector and cube positions (fitted on the training
bags' frames, evaluated on the held-out ones) tells whether the latent carries the arm and object state.

The bags are decoded as the arm the checkpoint was trained on (its provenance's arm layout; the simulated Panda when
it records none), or as --arm's preset; an --arm of another arm than the checkpoint's is refused.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jepa_world_model.bag_layout import add_arm_arguments, layout_for_checkpoint
from jepa_world_model.dataset import BagError, Ticks, load_bags
from jepa_world_model.model import (CheckpointError, Encoder, WorldModel, WorldModelConfig, mlp, read_checkpoint,
                                    model_from_checkpoint)
from jepa_world_model.runtime import select_device
from jepa_world_model.train import (TrainConfig, WindowSampler, encode_ticks, make_optimizer, optimize,
                                    rollout_errors, set_threads)

DEFAULT_HORIZONS = (1, 2, 5, 10)


class GenerativeBaseline(nn.Module):
    """Encoder and predictor shaped exactly like the JEPA's, plus a decoder back to pixels: it must predict
    every pixel of the future, where the JEPA only predicts a representation."""

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.predictor = mlp([config.latent_dim + config.action_dim] +
                              [config.predictor_hidden] * (config.predictor_layers - 1) + [config.latent_dim])
        channels = list(config.encoder_channels)[::-1]
        self.side = config.image_size // 2 ** len(channels)
        self.start = nn.Linear(config.latent_dim, channels[0] * self.side * self.side)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels, channels[1:] + [3]):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if c_out != 3:
                layers += [nn.GroupNorm(min(8, c_out), c_out), nn.GELU()]
        self.decoder = nn.Sequential(*layers)
        self.register_buffer('action_scale', torch.tensor(config.action_scale, dtype=torch.float32))

    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return state + self.predictor(torch.cat([state, action / self.action_scale], dim=1))

    def decode(self, state: torch.Tensor) -> torch.Tensor:
        channels = self.config.encoder_channels[-1]
        return self.decoder(self.start(state).view(-1, channels, self.side, self.side))

    def predict_frames(self, pixels0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Frames (B, 3, S, S) in [-0.5, 0.5] and actions (B, T, A) -> predicted frames (B, T, 3, S, S)."""
        state = self.encoder(pixels0)
        frames = []
        for t in range(actions.shape[1]):
            state = self.step(state, actions[:, t])
            frames.append(self.decode(state))
        return torch.stack(frames, dim=1)


def pixels_of(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., S, S, 3) -> float (..., 3, S, S) in [-0.5, 0.5] (the JEPA's own input scaling)."""
    return images.movedim(-1, -3).float().div(255.0).sub(0.5)


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return ((pixels + 0.5).clamp(0, 1) * 255.0).round().to(torch.uint8).movedim(-3, -1)


def generative_loss(model: GenerativeBaseline, images: torch.Tensor, actions: torch.Tensor,
                    discount: float) -> tuple[torch.Tensor, dict]:
    frames = pixels_of(images)
    reconstruction = (model.decode(model.encoder(frames[:, 0])) - frames[:, 0]).pow(2).mean()
    predicted = model.predict_frames(frames[:, 0], actions)
    weights = discount ** torch.arange(actions.shape[1], dtype=frames.dtype, device=frames.device)
    per_step = (predicted - frames[:, 1:]).pow(2).mean(dim=(0, 2, 3, 4))
    prediction = (weights * per_step).sum() / weights.sum()
    loss = reconstruction + prediction
    return loss, {'loss': float(loss.detach()), 'prediction': float(prediction.detach()),
                  'reconstruction': float(reconstruction.detach())}


def train_generative(config: WorldModelConfig, ticks: Ticks, cfg: TrainConfig, device: torch.device,
                     budget_s: float, max_steps: int | None, seed: int,
                     progress: bool) -> tuple[GenerativeBaseline, dict]:
    torch.manual_seed(seed)
    model = GenerativeBaseline(config).to(device).train()
    sampler = WindowSampler(ticks, ticks.windows(cfg.horizon + 1), cfg.horizon + 1, device)
    # As many frames per step as the JEPA's batches hold, cut into windows of horizon + 1.
    windows = max(1, cfg.batch_size * max(cfg.sequence_length, cfg.horizon + 1) // (cfg.horizon + 1))
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    started = time.monotonic()
    steps = optimize(optimizer, lambda step: generative_loss(model, *sampler.sample(windows, generator),
                                                             cfg.discount),
                     budget_s, max_steps, cfg.grad_clip, desc='generative baseline', progress=progress,
                     lr_final_fraction=cfg.lr_final_fraction)
    return model.eval(), {'steps': steps, 'seconds': time.monotonic() - started, 'windows_per_step': windows}


@torch.no_grad()
def generative_errors(baseline: GenerativeBaseline, jepa: WorldModel, sampler: WindowSampler,
                      starts: list[torch.Tensor]) -> dict:
    """Normalized error of the baseline's predicted frames per horizon: in the JEPA space (frames encoded
    by the JEPA encoder) and in pixel space, with copy-last in pixel space for scale."""
    latent_sq, pixel_sq, copy_pixel_sq, latents, frames_all = [], [], [], [], []
    for batch in starts:
        images, actions = sampler.gather(batch)
        b, length = images.shape[:2]
        frames = pixels_of(images)
        predicted = baseline.predict_frames(frames[:, 0], actions)
        targets = jepa.encode(images.flatten(0, 1)).view(b, length, -1)
        encoded = jepa.encode(to_uint8(predicted).flatten(0, 1)).view(b, length - 1, -1)
        latent_sq.append((encoded - targets[:, 1:]).pow(2).mean(dim=2))
        pixel_sq.append((predicted - frames[:, 1:]).pow(2).mean(dim=(2, 3, 4)))
        copy_pixel_sq.append((frames[:, :1] - frames[:, 1:]).pow(2).mean(dim=(2, 3, 4)))
        latents.append(targets.flatten(0, 1))
        frames_all.append(frames.flatten(0, 1))
    latent_spread = torch.cat(latents).var(dim=0).mean().clamp_min(1e-12)
    pixel_spread = torch.cat(frames_all).var(dim=0).mean().clamp_min(1e-12)
    return {'jepa_space': (torch.cat(latent_sq).mean(dim=0) / latent_spread).tolist(),
            'pixel_space': (torch.cat(pixel_sq).mean(dim=0) / pixel_spread).tolist(),
            'copy_last_pixel_space': (torch.cat(copy_pixel_sq).mean(dim=0) / pixel_spread).tolist()}


def ridge_parameters(train_x: np.ndarray, train_y: np.ndarray, alpha: float = 1.0):
    """A ridge regression on standardized inputs: (mean_x, std_x, weights, mean_y), predicting
    (x - mean_x) / std_x @ weights + mean_y."""
    x, y = train_x.astype(np.float64), train_y.astype(np.float64)
    mean_x, std_x = x.mean(axis=0), x.std(axis=0) + 1e-8
    mean_y = y.mean(axis=0)
    xs = (x - mean_x) / std_x
    weights = np.linalg.solve(xs.T @ xs + alpha * np.eye(xs.shape[1]), xs.T @ (y - mean_y))
    return mean_x, std_x, weights, mean_y


def fit_ridge(train_x: np.ndarray, train_y: np.ndarray, alpha: float = 1.0):
    """A ridge regression fitted on standardized inputs: returns x (N, D) -> predicted y (N, K)."""
    mean_x, std_x, weights, mean_y = ridge_parameters(train_x, train_y, alpha)
    return lambda inputs: ((np.atleast_2d(inputs) - mean_x) / std_x) @ weights + mean_y


def ridge_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                alpha: float = 1.0) -> dict | None:
    """Mean Euclidean error (cm) of a ridge regression latent -> position, and of predicting the training
    mean (the no-information reference). None when positions are unknown."""
    keep_train = np.all(np.isfinite(train_y), axis=1)
    keep_test = np.all(np.isfinite(test_y), axis=1)
    if keep_train.sum() < 2 or keep_test.sum() < 1:
        return None
    mean_y = train_y[keep_train].astype(np.float64).mean(axis=0)
    predicted = fit_ridge(train_x[keep_train], train_y[keep_train], alpha)(test_x[keep_test])
    truth = test_y[keep_test]
    return {'error_cm': float(np.linalg.norm(predicted - truth, axis=1).mean() * 100.0),
            'mean_baseline_cm': float(np.linalg.norm(mean_y - truth, axis=1).mean() * 100.0),
            'train_frames': int(keep_train.sum()), 'test_frames': int(keep_test.sum())}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='jepa eval-model', description=__doc__.split('\n\n')[0])
    parser.add_argument('--ckpt', required=True, help='world model checkpoint')
    parser.add_argument('--bag', action='append', required=True, help='held-out bag (repeatable)')
    parser.add_argument('--json', required=True, help='where to write the results')
    parser.add_argument('--train-bag', action='append', default=None,
                        help='bags for the baseline and the probe fit (default: the checkpoint\'s training bags)')
    parser.add_argument('--horizons', default=','.join(map(str, DEFAULT_HORIZONS)), help='comma-separated')
    parser.add_argument('--baseline-minutes', type=float, default=None,
                        help='generative baseline budget (default: the JEPA\'s recorded training time)')
    parser.add_argument('--baseline-steps', type=int, default=None, help='cap on baseline training steps')
    parser.add_argument('--max-windows', type=int, default=1000, help='evenly spread held-out windows to score')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--cache', default=None, help='decoded-bag cache directory')
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: all cores)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-progress', action='store_true')
    add_arm_arguments(parser, for_checkpoint=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        horizons = sorted({int(h) for h in args.horizons.split(',')})
        if horizons[0] < 1:
            raise ValueError(f'horizons must be >= 1, got {horizons}')
        device = select_device(args.device)
        checkpoint, model_id = read_checkpoint(args.ckpt)
        model = model_from_checkpoint(checkpoint, args.ckpt, model_id, device)
        train_bags = args.train_bag or [b['path'] for b in checkpoint['provenance'].get('bags', [])
                                        if Path(b['path']).exists()]
        if not train_bags:
            raise ValueError(f'{args.ckpt} names no training bag that exists here; pass --train-bag')
        layout, note = layout_for_checkpoint(args, checkpoint['provenance'], args.ckpt)
        if note:
            print(f'jepa eval-model: {note}', file=sys.stderr)
        heldout = load_bags(args.bag, args.cache, model.image_size, layout=layout)
        train_ticks = load_bags(train_bags, args.cache, model.image_size, layout=layout)
    except (BagError, CheckpointError, ValueError) as exc:
        print(f'jepa eval-model: {exc}', file=sys.stderr)
        return 2
    set_threads(args.threads)
    cfg = TrainConfig.from_dict((checkpoint.get('train_state') or {}).get('config', {}))
    length = horizons[-1] + 1
    starts = heldout.windows(length)
    if len(starts) == 0:
        print(f'jepa eval-model: the held-out bags have no {length} consecutive ticks (horizon {horizons[-1]})',
              file=sys.stderr)
        return 2
    if len(starts) > args.max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, args.max_windows).round().astype(int)]
    test_latents = encode_ticks(model, heldout.images)
    jepa = rollout_errors(model, test_latents, torch.from_numpy(heldout.actions).to(device), starts, length)
    budget_s = 60.0 * args.baseline_minutes if args.baseline_minutes is not None else \
        float(checkpoint['metrics'].get('train_seconds', 60.0))
    baseline, baseline_info = train_generative(model.config, train_ticks, cfg, device, budget_s, args.baseline_steps,
                                               args.seed, not args.no_progress)
    generative = generative_errors(baseline, model, WindowSampler(heldout, starts, length, device),
                                   list(torch.from_numpy(starts).to(device).split(256)))
    pick = [h - 1 for h in horizons]
    train_latents = encode_ticks(model, train_ticks.images).cpu().numpy()
    test_latents = test_latents.cpu().numpy()
    result = {
        'checkpoint': str(Path(args.ckpt).resolve()),
        'model_id': model_id,
        'bags': [str(Path(b).resolve()) for b in args.bag],
        'train_bags': train_bags,
        'arm': None if layout.is_default else layout.to_dict(),
        'windows': len(starts),
        'horizons': horizons,
        'normalized_error': {'jepa': [jepa['normalized_error'][i] for i in pick],
                             'copy_last': [jepa['copy_last'][i] for i in pick],
                             'generative': [generative['jepa_space'][i] for i in pick]},
        'normalized_error_pixel_space': {'generative': [generative['pixel_space'][i] for i in pick],
                                         'copy_last': [generative['copy_last_pixel_space'][i] for i in pick]},
        'normalization': 'mean squared error over dimensions / mean per-dimension variance of the target '
                         'representations over the held-out windows',
        'comparison': 'jepa, copy_last and generative are all measured in the JEPA latent space: the generative '
                      'baseline\'s predicted frames are encoded with the JEPA encoder. The generative baseline has '
                      'the JEPA\'s encoder and predictor architecture plus a pixel decoder, is trained in this run '
                      'on the same training bags (reconstruction + discounted multi-step pixel prediction over the '
                      'same horizon, as many frames per step) for the same wall-clock budget as the JEPA. Its error '
                      'in its own pixel space, next to copy-last in pixel space, is in normalized_error_pixel_space.',
        'generative_baseline': {**baseline_info, 'budget_s': budget_s,
                                'parameters': sum(p.numel() for p in baseline.parameters()),
                                'jepa_parameters': sum(p.numel() for p in model.parameters())},
        'linear_probe_error_cm': {
            'ee': None, 'cube': None,
            'method': 'ridge regression (alpha 1, standardized latents) fitted on all training-bag frames, '
                      'mean Euclidean error on the held-out frames; *_mean_baseline_cm predicts the training mean'},
        'embedding_std': {'min': min(jepa['embedding_std']), 'mean': float(np.mean(jepa['embedding_std']))},
        'inverse_dynamics_error_cm': jepa['inverse_error_cm'],
        'jepa_train_seconds': checkpoint['metrics'].get('train_seconds'),
    }
    for name in ('ee', 'cube'):
        probe = ridge_probe(train_latents, getattr(train_ticks, name), test_latents, getattr(heldout, name))
        if probe is not None:
            result['linear_probe_error_cm'][name] = probe['error_cm']
            result['linear_probe_error_cm'][f'{name}_mean_baseline_cm'] = probe['mean_baseline_cm']
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    rows = [f'{"horizon":>8} ' + ' '.join(f'{h:>8}' for h in horizons)]
    for name, values in result['normalized_error'].items():
        rows.append(f'{name:>8} ' + ' '.join(f'{v:8.3f}' for v in values))
    print('\n'.join(rows))
    probe = result['linear_probe_error_cm']
    print(f'linear probe: ee {probe["ee"]} cm, cube {probe["cube"]} cm; wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
