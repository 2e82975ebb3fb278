"""World model throughput with the default config: training samples/s, predictor rollout steps/s at batch
256 and 1024 (horizon 5, with gradients as the planner's refinement needs them and without), encoder latency.

Baselines measured in the same run: rollout at batch 1 (what the batched planner saves) and an MLP of the
predictor's parameter count without the residual/normalization structure (what the architecture costs).
Runs on CPU (all cores) and, when available, CUDA. Prints figures; asserts nothing. --quick: the same
measurements at batch sizes of a few and a few calls each (seconds; checks the bench runs, its figures mean
little).

    .venv/bin/python bench/world_model_throughput.py [--quick]
"""
import argparse
import os
import time

import numpy as np
import torch

from jepa_world_model.model import WorldModel, WorldModelConfig
from jepa_world_model.train import TrainConfig, jepa_loss, make_optimizer


def timed(fn, min_seconds=1.0, device=None) -> float:
    """Seconds per call of fn (after one warm-up call), measured over at least min_seconds."""
    fn()
    sync = torch.cuda.synchronize if device is not None and device.type == 'cuda' else (lambda: None)
    sync()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        fn()
        calls += 1
    sync()
    return (time.perf_counter() - started) / calls


def bench(device: torch.device, quick: bool) -> None:
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig()).to(device)
    cfg = TrainConfig(batch_size=2) if quick else TrainConfig()
    seconds_per_figure = 0.05 if quick else 1.0
    batches = (1, 16, 64) if quick else (1, 256, 1024)
    n_params = sum(p.numel() for p in model.parameters())
    print(f'\n== {device} ({torch.get_num_threads()} threads), {n_params} parameters, latent {model.latent_dim}')

    length = cfg.sequence_length
    images = torch.randint(0, 256, (cfg.batch_size, length, 64, 64, 3), dtype=torch.uint8, device=device)
    actions = (torch.rand(cfg.batch_size, length - 1, 4, device=device) * 2 - 1) * model.action_scale
    windows = cfg.batch_size * (length - cfg.horizon)
    optimizer = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)

    def train_step():
        loss, _ = jepa_loss(model, images, actions, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    seconds = timed(train_step, 3 * seconds_per_figure, device)
    print(f'training: {windows / seconds:8.1f} windows/s of horizon {cfg.horizon} '
          f'({cfg.batch_size * length / seconds:.0f} frames/s, {cfg.batch_size} sequences x {length} frames, '
          f'{seconds * 1e3:.0f} ms/step); 15 min = {900 / seconds:.0f} steps')

    model.eval()
    frame = images[:1, 0]
    with torch.no_grad():
        latency = timed(lambda: model.encode(frame), seconds_per_figure, device)
    print(f'encoder: {latency * 1e3:.2f} ms per image at batch 1')

    predictor_params = sum(p.numel() for p in model.predictor.parameters())
    # A plain ReLU MLP with the same input/output and (about) the same parameter count: 2 hidden layers of
    # width w have w^2 + w * (inputs + outputs + 2) + outputs parameters.
    inputs, outputs = model.latent_dim + 4 + model.config.z_dim, model.latent_dim
    b = inputs + outputs + 2
    width = int((-b + (b * b + 4 * (predictor_params - outputs)) ** 0.5) / 2)
    plain = torch.nn.Sequential(torch.nn.Linear(model.latent_dim + 4 + model.config.z_dim, width), torch.nn.ReLU(),
                                torch.nn.Linear(width, width), torch.nn.ReLU(),
                                torch.nn.Linear(width, model.latent_dim)).to(device)
    plain_params = sum(p.numel() for p in plain.parameters())

    def plain_rollout(z, acts):
        zeros = z.new_zeros(z.shape[0], model.config.z_dim)
        for t in range(acts.shape[1]):
            z = plain(torch.cat([z, acts[:, t], zeros], dim=1))
        return z

    horizon = 5
    rates = {}
    for batch in batches:
        z0 = torch.randn(batch, model.latent_dim, device=device)
        acts = torch.zeros(batch, horizon, 4, device=device)
        with torch.no_grad():
            rates[batch] = batch * horizon / timed(lambda: model.rollout(z0, acts), seconds_per_figure, device)
            plain_rate = batch * horizon / timed(lambda: plain_rollout(z0, acts), seconds_per_figure, device)
        grad_acts = acts.clone().requires_grad_(True)

        def with_grad():
            model.rollout(z0, grad_acts)[:, -1].pow(2).sum().backward()

        grad_rate = batch * horizon / timed(with_grad, seconds_per_figure, device)
        print(f'rollout batch {batch:5d} horizon {horizon}: {rates[batch]:12.0f} steps/s '
              f'({rates[batch] / rates[1]:6.1f}x batch 1), with action gradients {grad_rate:10.0f} steps/s, '
              f'plain MLP ({plain_params} vs {predictor_params} params) {plain_rate:12.0f} steps/s '
              f'(predictor at {rates[batch] / plain_rate:.2f}x its speed)')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='tiny batches, a few calls per figure')
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    np.set_printoptions(precision=3)
    bench(torch.device('cpu'), args.quick)
    if torch.cuda.is_available():
        bench(torch.device('cuda'), args.quick)
    else:
        print('\n(CUDA not available: GPU figures skipped)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
