"""Training of the JEPA world model from bags, without labels, pixel reconstruction or contrastive pairs.

Objective on windows of H+1 control ticks (images o_0..o_H, actions a_0..a_{H-1}):

- prediction: open-loop latent rollout s^_{k+1} = predict(s^_k, a_k, z_k) from s^_0 = enc(o_0), compared
  with the stop-gradient (detached) embeddings sg(enc(o_{k+1})), discounted over k;
- variance-covariance regularization (VICReg) of the embeddings against collapse: every latent dimension
  keeps a standard deviation >= 1 over the batch, and dimensions are decorrelated;
- inverse dynamics: a head predicts a_k from (s_k, s_{k+1}), which forces the embedding to carry what the
  actions change (the arm), not only what is easy to keep still;
- slowness: the embeddings' variance within each sequence (1.1 s) is penalized. With VICReg holding every
  dimension's spread over the batch at >= 1, this makes the cheapest dimensions those that differ between
  scenes but persist within one: the cube's position, which the arm's motion would otherwise crowd out of the
  latent (the inverse-dynamics term keeps the arm in it);
- latent variable z_k ~ q(z | s_k, s_{k+1}) with a KL penalty (bounded information); z is zeroed for a
  share of the samples so that the predictor is also good with z = 0, as it is used for planning.

`jepa train --bag BAG [--bag BAG ...] --out CKPT [--minutes T] [--device auto] [--resume CKPT]
[--arm PRESET [--urdf FILE] [--camera-topic TOPIC]]`

Without --arm the bags are the simulated Panda's (/camera/image_raw, /joint_states, panda_joint1..7 + fingers, the
Panda URDF), or, with --resume, those of the arm the checkpoint was trained on (bag_layout.layout_for_checkpoint,
which refuses an --arm of another arm). `--arm PRESET` decodes them as that arm preset's (config/arms/<PRESET>.yaml,
as `jepa launch arm arm:=PRESET` and `jepa collect --arm PRESET` use it): its camera topic, its joints and its URDF's
kinematics, with the overrides the arm graph takes as urdf:= and camera_topic:=; a preset URDF that is not there is
taken from the bag's /robot_description when it recorded one. Bags without /jepa/action (a person's demonstrations
recorded with `jepa record`, another tool's bags) get actions derived from the recorded joint motion. A bag that does
not match the arm is refused, naming what differs (jepa_world_model.dataset).

The same command runs as each process of `torchrun --nproc_per_node N` (DistributedDataParallel: NCCL on GPUs, each
process on the GPU of its LOCAL_RANK, gloo on the CPU): the configured batch_size is then the global batch, which
every rank draws alike and trains its share of, so N processes take the steps one process would take on that
batch; rank 0 keeps the time budget, validates and writes the checkpoint (its provenance records world_size and
backend; one process alone: 1 and 'none').
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from jepa_world_model.bag_layout import add_arm_arguments, arm_layout, layout_for_checkpoint
from jepa_world_model.dataset import BagError, Ticks, load_bags
from jepa_world_model.image_statistics import METRICS_KEY, ImageReference
from jepa_world_model.model import (CheckpointError, WorldModel, WorldModelConfig, default_checkpoint_path,
                                    kl_to_standard_normal, model_from_checkpoint, read_checkpoint, save_checkpoint)
from jepa_world_model.runtime import check_device_name, select_device

REPORT_HORIZONS = (1, 2, 3, 5, 10)


@dataclass
class TrainConfig:
    batch_size: int = 16          # sequences per step
    sequence_length: int = 12     # frames per sequence (each frame is encoded once per step)
    horizon: int = 5              # rollout steps in the prediction loss
    discount: float = 0.9         # weight of rollout step k is discount**k
    lr: float = 1e-3
    lr_final_fraction: float = 0.1    # cosine decay over the run's budget down to this share of lr
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    var_weight: float = 1.0
    cov_weight: float = 0.04
    idm_weight: float = 1.0
    slow_weight: float = 1.0
    kl_weight: float = 0.02
    z_drop: float = 0.5           # share of samples trained with z = 0
    val_fraction: float = 0.1
    val_every_s: float = 90.0
    eval_horizon: int = 10

    @classmethod
    def from_dict(cls, values: dict) -> 'TrainConfig':
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f'unknown training config keys {unknown}')
        return cls(**values)


@dataclass
class TrainState:
    step: int = 0
    seconds: float = 0.0
    samples: int = 0
    history: dict = field(default_factory=dict)    # name -> list of values, aligned with history['step']
    validations: list = field(default_factory=list)

    def log(self, **values) -> None:
        for name, value in values.items():
            self.history.setdefault(name, []).append(float(value))


def set_threads(count: int | None) -> None:
    """torch intra-op threads: all cores by default (the training budget assumes both cores of the target),
    shared among the processes torchrun started on this machine."""
    local_processes = int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
    torch.set_num_threads(count or max(1, (os.cpu_count() or 1) // local_processes))


@dataclass(frozen=True)
class Job:
    """This process's place in a torchrun job: its rank among world_size processes (local_rank among those on its
    machine), the torch.distributed backend and the device its collectives use. One process alone is rank 0 of 1
    with backend 'none', and every method is then the identity: the training runs exactly as without torchrun."""
    rank: int = 0
    world_size: int = 1
    backend: str = 'none'
    device: torch.device = torch.device('cpu')
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 validates and writes the checkpoint, its plot and the logs."""
        return self.rank == 0

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch (dim 0), drawn alike on every rank: the world_size shares,
        in rank order, are the batch one process would train on."""
        share = batch.shape[0] // self.world_size
        return batch[self.rank * share:(self.rank + 1) * share]

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The ranks' shares of a batch (dim 0) concatenated in rank order, differentiable: each rank's share
        gets the gradient every rank's loss puts on it (the gather's backward sums them)."""
        if self.world_size == 1:
            return tensor
        # The autograd-aware gather torch 2.13 names in place of torch.distributed.nn.functional.all_gather (which
        # warns that it is deprecated at every call): its backward is a reduce-scatter summing the ranks' gradients.
        from torch.distributed._functional_collectives import all_gather_single
        return all_gather_single(tensor, 0, dist.group.WORLD)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over the ranks of `values` (equal shares of a batch: the batch's means of per-sample means)."""
        if self.world_size == 1:
            return values
        values = values.to(self.device)
        dist.all_reduce(values)
        return values / self.world_size

    def main_value(self, value: float) -> float:
        """Rank 0's `value` on every rank: decisions that depend on a process's own clock (the time budget, the
        learning-rate schedule) are taken once, so that all ranks take the same steps."""
        if self.world_size == 1:
            return value
        shared = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(shared, 0)
        return float(shared.item())

    def local_main_first(self, work):
        """work() on each machine's first process (local_rank 0) before the others, which then find what it cached
        there (decoded bags); it lets them go on whether or not its work succeeded, so none waits on a failed one."""
        if self.local_rank:
            dist.barrier()
        try:
            return work()
        finally:
            if self.world_size > 1 and not self.local_rank:
                dist.barrier()


SINGLE_PROCESS = Job()


def start_job(device_name: str) -> tuple[Job, torch.device]:
    """Join the torchrun job this process was started in (WORLD_SIZE > 1 in the environment), or stay one process
    (no torchrun: exactly the single-process training). In a job, `auto` and `cuda` take the GPU of the process's
    LOCAL_RANK and the backend is NCCL; on the CPU it is gloo. ValueError naming what does not fit."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size <= 1:
        return SINGLE_PROCESS, select_device(device_name)
    if 'LOCAL_RANK' not in os.environ:
        raise ValueError(f'WORLD_SIZE={world_size} without LOCAL_RANK: start distributed training with torchrun '
                         '(torchrun --nproc_per_node N ...)')
    local_rank = int(os.environ['LOCAL_RANK'])
    check_device_name(device_name)
    if device_name.startswith('cuda:'):
        raise ValueError(f'--device {device_name}: under torchrun each process takes the GPU of its LOCAL_RANK; '
                         'pass --device cuda or auto (CUDA_VISIBLE_DEVICES chooses the GPUs)')
    if device_name == 'cuda' or (device_name == 'auto' and torch.cuda.is_available()):
        device = select_device(f'cuda:{local_rank}')
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f'LOCAL_RANK {local_rank} but torch sees {torch.cuda.device_count()} GPU(s): start '
                             'at most one process per GPU')
        torch.cuda.set_device(device)
        dist.init_process_group('nccl', device_id=device)
    else:
        device = torch.device('cpu')
        dist.init_process_group('gloo')
    return Job(dist.get_rank(), dist.get_world_size(), dist.get_backend(), device, local_rank), device


def end_job(job: Job) -> None:
    if job.world_size > 1:
        dist.destroy_process_group()


def device_memory(device: torch.device) -> int:
    """Bytes of memory of a CUDA device; 0 for any other (its frames stay in host memory)."""
    return torch.cuda.get_device_properties(device).total_memory if device.type == 'cuda' else 0


class WindowSampler:
    """Random windows of consecutive ticks. The frames go to the training device once when they fit in
    `device_share` of its memory; otherwise they stay in host memory (memory-mapped from the bag cache) and each
    batch's windows are gathered there and copied over."""

    def __init__(self, ticks: Ticks, starts: np.ndarray, length: int, device: torch.device,
                 device_share: float = 0.25):
        if len(starts) == 0:
            raise ValueError(f'no window of {length} consecutive ticks in the data ({len(ticks)} ticks)')
        self.device = torch.device(device)
        frames = torch.from_numpy(ticks.images)
        actions = torch.from_numpy(ticks.actions)
        if ticks.images.nbytes + ticks.actions.nbytes <= device_share * device_memory(self.device):
            frames, actions = frames.to(self.device), actions.to(self.device)
        self.images, self.actions = frames, actions
        self.starts = torch.from_numpy(starts)
        self.length = length
        self.offsets = torch.arange(length, device=frames.device)

    def __len__(self) -> int:
        return len(self.starts)

    def gather(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, S, S, 3) uint8 images and (B, L-1, A) actions, on the training device, of the windows starting
        at `starts`."""
        idx = starts.to(self.offsets.device)[:, None] + self.offsets
        return self.images[idx].to(self.device), self.actions[idx[:, :-1]].to(self.device)

    def sample(self, batch: int, generator: torch.Generator,
               job: Job = SINGLE_PROCESS) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of `batch` windows drawn with `generator`; in a torchrun job `batch` is the global batch, drawn
        alike on every rank, of which this rank gets its share."""
        pick = job.take(torch.randint(len(self.starts), (batch,), generator=generator))
        return self.gather(self.starts[pick])


def variance_covariance(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg terms of (N, D) embeddings: hinge on per-dimension std below 1, and the mean squared
    off-diagonal covariance (summed over pairs, divided by D)."""
    centered = embeddings - embeddings.mean(dim=0)
    std = torch.sqrt(centered.var(dim=0) + 1e-4)
    variance = torch.relu(1.0 - std).mean()
    n, d = centered.shape
    cov = centered.T @ centered / max(n - 1, 1)
    covariance = (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d
    return variance, covariance


def jepa_loss(model: WorldModel, images: torch.Tensor, actions: torch.Tensor, cfg: TrainConfig,
              generator: torch.Generator | None = None, job: Job = SINGLE_PROCESS) -> tuple[torch.Tensor, dict]:
    """The training objective on a batch of sequences: images (B, L, S, S, 3) uint8, actions (B, L-1, A).

    Every frame is encoded once; the rollout of cfg.horizon steps starts from every tick that leaves room
    for it, so one sequence of L frames yields L - horizon overlapping windows for the predictor.

    In a torchrun job the batch is this rank's share of the global batch: the latent-variable noise is drawn for
    the global batch and sliced like it, and the variance-covariance terms (statistics of the batch, not means of
    per-sample terms) are taken over the embeddings of all ranks, so that the mean of the ranks' gradients (what
    DistributedDataParallel applies) is the gradient of one process on the global batch."""
    batch, length = images.shape[:2]
    horizon = min(cfg.horizon, length - 1)
    states = model.encode(images.flatten(0, 1)).view(batch, length, -1)
    targets = states.detach()
    window = (torch.arange(length - horizon, device=states.device)[:, None]
              + torch.arange(horizon + 1, device=states.device))                  # (W, horizon + 1)
    win_states = states[:, window].flatten(0, 1)                               # (B*W, horizon + 1, D)
    win_targets = targets[:, window].flatten(0, 1)
    win_actions = actions[:, window[:, :-1]].flatten(0, 1)                     # (B*W, horizon, A)
    n = win_states.shape[0]
    state = win_states[:, 0]
    weights, pred_terms, kl_terms = [], [], []
    for k in range(horizon):
        mean, logvar = model.infer_latent_var(win_targets[:, k], win_targets[:, k + 1])
        noise = job.take(torch.randn((n * job.world_size, *mean.shape[1:]), generator=generator)).to(mean.device)
        used = (job.take(torch.rand(n * job.world_size, 1, generator=generator)) >= cfg.z_drop).to(mean)
        latent_var = (mean + noise * (0.5 * logvar).exp()) * used
        kl_terms.append((kl_to_standard_normal(mean, logvar) * used[:, 0]).mean())
        state = model.predict(state, win_actions[:, k], latent_var)
        pred_terms.append((state - win_targets[:, k + 1]).pow(2).mean())
        weights.append(cfg.discount ** k)
    prediction = sum(w * p for w, p in zip(weights, pred_terms)) / sum(weights)
    kl = torch.stack(kl_terms).mean()
    variance, covariance = variance_covariance(job.gather(states.flatten(0, 1)))
    inferred = model.inverse_dynamics(states[:, :-1].flatten(0, 1), states[:, 1:].flatten(0, 1))
    inverse = ((inferred - actions.flatten(0, 1)) / model.action_scale).pow(2).mean()
    slowness = states.var(dim=1).mean()
    loss = (prediction + cfg.var_weight * variance + cfg.cov_weight * covariance + cfg.idm_weight * inverse
            + cfg.slow_weight * slowness + cfg.kl_weight * kl)
    terms = {'loss': loss, 'prediction': prediction, 'variance': variance, 'covariance': covariance,
             'inverse': inverse, 'slowness': slowness, 'kl': kl}
    return loss, {k: float(v.detach()) for k, v in terms.items()}


class JepaObjective(torch.nn.Module):
    """jepa_loss as a module's forward: what DistributedDataParallel wraps, so that it sees the whole step and
    averages the gradients of all the parameters the step used."""

    def __init__(self, model: WorldModel, cfg: TrainConfig, job: Job):
        super().__init__()
        self.model, self.cfg, self.job = model, cfg, job

    def forward(self, images: torch.Tensor, actions: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        return jepa_loss(self.model, images, actions, self.cfg, generator, self.job)


def bags_for_checkpoint(args: argparse.Namespace, prog: str):
    """For the commands that read play bags in a trained model's latent space (fit-readout, train-high-level):
    -> (checkpoint path, model, model_id, layout, ticks): args.checkpoint ('' or None: the shipped model), and
    args.bag decoded as the arm it was trained on or as add_arm_arguments' options say (layout_for_checkpoint,
    whose note goes to stderr after `prog: `)."""
    path = args.checkpoint or default_checkpoint_path()
    checkpoint, model_id = read_checkpoint(path)
    model = model_from_checkpoint(checkpoint, path, model_id)
    layout, note = layout_for_checkpoint(args, checkpoint['provenance'], path)
    if note:
        print(f'{prog}: {note}', file=sys.stderr)
    return path, model, model_id, layout, load_bags(args.bag, image_size=model.image_size, layout=layout)


@torch.no_grad()
def encode_ticks(model: WorldModel, images: np.ndarray, rows: np.ndarray | None = None,
                 batch: int = 256) -> torch.Tensor:
    """Embeddings (N, D) of uint8 frames (N, S, S, 3) (or of the frames at `rows`), in batches, on the model's
    device. Each batch is read on its own, so frames memory-mapped from the decoded-bag cache stay on disk."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    return torch.cat([model.encode(torch.from_numpy(np.asarray(images[rows[i:i + batch]])).to(model.device))
                      for i in range(0, len(rows), batch)])


@torch.no_grad()
def rollout_errors(model: WorldModel, states: torch.Tensor, actions: torch.Tensor, starts: np.ndarray,
                   length: int) -> dict:
    """Open-loop prediction error (z = 0) at every horizon 1..length-1 of the windows starting at `starts`
    (indices into the per-tick states (N, D) and actions (N, A)), next to the copy-last-state baseline,
    both divided by the mean per-dimension variance of the target embeddings of those windows."""
    index = torch.as_tensor(starts, device=states.device)[:, None] + torch.arange(length, device=states.device)
    sq_model, sq_copy, inverse_err = [], [], []
    for rows in index.split(1024):
        window, acts = states[rows], actions[rows[:, :-1]]
        predicted = model.rollout(window[:, 0], acts)
        sq_model.append((predicted - window[:, 1:]).pow(2).mean(dim=2))
        sq_copy.append((window[:, :1] - window[:, 1:]).pow(2).mean(dim=2))
        inferred = model.inverse_dynamics(window[:, 0], window[:, 1])
        inverse_err.append((inferred[:, :3] - acts[:, 0, :3]).norm(dim=1))
    embeddings = states[index.unique()]
    spread = embeddings.var(dim=0).mean().clamp_min(1e-12)
    corr = torch.corrcoef(embeddings.T) if embeddings.shape[0] > 1 else torch.eye(embeddings.shape[1])
    return {
        'normalized_error': (torch.cat(sq_model).mean(dim=0) / spread).tolist(),
        'copy_last': (torch.cat(sq_copy).mean(dim=0) / spread).tolist(),
        'embedding_std': embeddings.std(dim=0).tolist(),
        'embedding_corr': torch.nan_to_num(corr).tolist(),
        'inverse_error_cm': float(torch.cat(inverse_err).mean() * 100.0),
        'windows': len(starts),
    }


@torch.no_grad()
def update_latent_stats(model: WorldModel, ticks: Ticks, device: torch.device, count: int = 2048) -> None:
    """Store mean / variance of the embeddings of (up to `count`) training frames in the model."""
    idx = np.linspace(0, len(ticks) - 1, min(count, len(ticks))).round().astype(int)
    embeddings = encode_ticks(model, ticks.images, idx)
    model.latent_mean.copy_(embeddings.mean(dim=0))
    model.latent_var.copy_(embeddings.var(dim=0).clamp_min(1e-8))


def plot_training(state: TrainState, path: Path, title: str) -> None:
    """Losses, embedding spread / correlation (the collapse detector) and error vs horizon, one PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    steps = state.history.get('step', [])
    ax = axes[0, 0]
    for name in ('loss', 'prediction', 'variance', 'covariance', 'inverse', 'slowness', 'kl'):
        if name in state.history:
            ax.plot(steps, np.maximum(state.history[name], 1e-6), label=name, lw=0.8)
    val_steps = [v['step'] for v in state.validations]
    if val_steps:
        ax.plot(val_steps, [max(v['normalized_error'][0], 1e-6) for v in state.validations], 'k.-',
                label='val h=1 normalized error')
    ax.set_yscale('log')
    ax.set_xlabel('step')
    ax.set_title('training losses')
    ax.legend(fontsize=7)
    if state.validations:
        last = state.validations[-1]
        ax = axes[0, 1]
        std = np.sort(np.asarray(last['embedding_std']))[::-1]
        ax.bar(np.arange(len(std)), std)
        ax.axhline(1.0, color='r', lw=0.8, label='VICReg std target')
        ax.set_title(f'embedding std per dimension (val, step {last["step"]}); collapse = bars near 0')
        ax.legend(fontsize=7)
        ax = axes[1, 0]
        image = ax.imshow(np.asarray(last['embedding_corr']), vmin=-1, vmax=1, cmap='RdBu_r')
        fig.colorbar(image, ax=ax)
        ax.set_title('embedding correlation matrix (val); off-diagonal = redundancy')
        ax = axes[1, 1]
        horizons = np.arange(1, len(last['normalized_error']) + 1)
        ax.plot(horizons, last['normalized_error'], 'o-', label='JEPA rollout (z = 0)')
        ax.plot(horizons, last['copy_last'], 's--', label='copy last state')
        ax.set_xlabel('horizon (control periods)')
        ax.set_ylabel('error / embedding variance')
        ax.set_title('prediction error vs rollout horizon (val)')
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def git_commit() -> str:
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def make_optimizer(parameters, lr: float, weight_decay: float, state: dict | None = None) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if state:
        optimizer.load_state_dict(state)
    return optimizer


def optimize(optimizer: torch.optim.Optimizer, loss_fn, budget_s: float, max_steps: int | None, grad_clip: float,
             start_step: int = 0, desc: str = 'train', on_step=None, progress: bool = True,
             lr_final_fraction: float = 1.0, now=time.monotonic) -> int:
    """The optimization loop shared by the world model and the baselines: gradient clipping, a wall-clock
    budget and/or a step limit, a tqdm bar. loss_fn(step) -> (loss, terms); on_step(step, terms) is called
    after every step. The learning rate follows a cosine from its initial value down to lr_final_fraction
    of it at the end of the budget (whichever of time and steps runs out first). now() is the clock of the
    budget (in a torchrun job rank 0's, so that every rank stops at the same step with the same rates).
    Returns the step reached."""
    parameters = [p for group in optimizer.param_groups for p in group['params']]
    base_lrs = [group['lr'] for group in optimizer.param_groups]
    started = now()
    bar = tqdm(total=max_steps, desc=desc, unit='step', disable=not progress, dynamic_ncols=True, file=sys.stderr)
    step = start_step
    try:
        while (max_steps is None or step - start_step < max_steps) and now() - started < budget_s:
            loss, terms = loss_fn(step)
            if not torch.isfinite(loss):
                raise FloatingPointError(f'loss became {float(loss)} at step {step} (terms {terms})')
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
            done = max((now() - started) / budget_s,
                       (step - start_step) / max_steps if max_steps else 0.0)
            scale = lr_final_fraction + (1.0 - lr_final_fraction) * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))
            for group, base in zip(optimizer.param_groups, base_lrs):
                group['lr'] = base * scale
            optimizer.step()
            step += 1
            bar.update(1)
            bar.set_postfix({k: f'{v:.3g}' for k, v in terms.items() if k in ('loss', 'prediction', 'inverse')},
                            refresh=False)
            if on_step is not None:
                on_step(step, terms)
    finally:
        bar.close()
    for group, base in zip(optimizer.param_groups, base_lrs):
        group['lr'] = base      # a resumed run starts its own schedule from the full rate
    return step


def train_world_model(model: WorldModel, ticks: Ticks, cfg: TrainConfig, device: torch.device, budget_s: float,
                      max_steps: int | None = None, state: TrainState | None = None,
                      optimizer_state: dict | None = None, seed: int = 0, checkpoint=None,
                      progress: bool = True, job: Job = SINGLE_PROCESS) -> tuple[TrainState, dict]:
    """Train in place for budget_s seconds (or max_steps). Validates every cfg.val_every_s seconds on the
    held-out tail of each segment and calls checkpoint(state, optimizer) after each validation.
    Returns the training state and the optimizer's state dict.

    In a torchrun job (`job`) every rank runs this with the same data and seed: cfg.batch_size is the global
    batch, each rank trains on its share under DistributedDataParallel, and rank 0 alone validates and calls
    checkpoint (the others go on to the next step and wait for it there)."""
    if cfg.batch_size % job.world_size:
        raise ValueError(f'batch_size {cfg.batch_size} (the global batch) does not split evenly over '
                         f'{job.world_size} processes')
    state = state or TrainState()
    held = ticks.holdout_mask(cfg.val_fraction)
    length = max(cfg.sequence_length, cfg.horizon + 1)
    train_sampler = WindowSampler(ticks, ticks.windows(length, ~held), length, device)
    # Short data: validate on the longest horizon the held-out tails allow.
    val_length = next((n for n in range(cfg.eval_horizon + 1, 1, -1) if len(ticks.windows(n, held))), 0)
    val_starts = ticks.windows(val_length, held) if val_length else np.zeros(0, dtype=np.int64)
    val_ticks = np.flatnonzero(held)
    # Window starts as positions within the held-out ticks (windows never leave them).
    val_starts = np.searchsorted(val_ticks, val_starts)
    val_actions = torch.from_numpy(ticks.actions[val_ticks]).to(device)
    generator = torch.Generator().manual_seed(seed + state.step)
    model.to(device).train()
    objective = JepaObjective(model, cfg, job)
    if job.world_size > 1:
        # Starts every rank from rank 0's parameters and buffers. The buffers (the latent statistics rank 0 stores
        # at each validation, the action scale) are not the loss's business: they are not broadcast at every step.
        objective = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device] if device.type == 'cuda' else None, forward_sync_buffers=False)
        # The 1x1 keypoint convolution's weight gradient comes with other strides on its size-1 dimensions than the
        # weight, the same memory layout: DDP's warning about it says nothing.
        warnings.filterwarnings('ignore', message='Grad strides do not match bucket view strides')
    optimizer = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay, optimizer_state)
    clock = {'last': time.monotonic()}
    first_step = state.step

    def validate(step: int) -> None:
        state.seconds += time.monotonic() - clock['last']
        model.eval()
        if len(val_starts):
            metrics = rollout_errors(model, encode_ticks(model, ticks.images, val_ticks), val_actions, val_starts,
                                     val_length)
            metrics['step'] = step
            state.validations.append(metrics)
            h = min(5, len(metrics['normalized_error']))
            tqdm.write(f'[val step {step}] normalized error h=1 {metrics["normalized_error"][0]:.3f} '
                       f'(copy-last {metrics["copy_last"][0]:.3f}), h={h} {metrics["normalized_error"][h - 1]:.3f} '
                       f'(copy-last {metrics["copy_last"][h - 1]:.3f}), min embedding std '
                       f'{min(metrics["embedding_std"]):.3f}, inverse dynamics error '
                       f'{metrics["inverse_error_cm"]:.2f} cm', file=sys.stderr)
        update_latent_stats(model, ticks, device)
        if checkpoint is not None:
            checkpoint(state, optimizer.state_dict())
        model.train()
        clock['last'] = time.monotonic()

    def loss_fn(step):
        loss, terms = objective(*train_sampler.sample(cfg.batch_size, generator, job), generator)
        if job.world_size > 1:
            # The global batch's terms (the mean of equal shares' means), alike on every rank: what is logged, and
            # a loss that is not finite on one rank stops all of them at this step.
            terms = dict(zip(terms, job.mean(torch.tensor(list(terms.values()), dtype=torch.float64)).tolist()))
            if not math.isfinite(terms['loss']):
                raise FloatingPointError(f'loss became {terms["loss"]} at step {step} (terms {terms}, the global '
                                         f'batch of {job.world_size} processes)')
        return loss, terms

    def on_step(step, terms):
        state.step = step
        state.samples += cfg.batch_size
        if step % 10 == 0 or step == first_step + 1:
            state.log(step=step, **terms)
        if job.is_main and time.monotonic() - clock['last'] >= cfg.val_every_s:
            validate(step)

    optimize(optimizer, loss_fn, budget_s, max_steps, cfg.grad_clip, state.step, 'jepa train', on_step,
             progress and job.is_main, cfg.lr_final_fraction, lambda: job.main_value(time.monotonic()))
    if job.is_main:
        validate(state.step)
    model.eval()
    return state, optimizer.state_dict()


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` strings -> dict, values parsed as YAML scalars/lists (so 64, 1e-3, [16, 32] work)."""
    import yaml
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep:
            raise ValueError(f'--set expects key=value, got {pair!r}')
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):
            # YAML 1.1 reads an exponent without a decimal point (3e-4) as a string.
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        values[key.strip()] = parsed
    return values


def split_overrides(values: dict) -> tuple[dict, dict]:
    model_keys = {f.name for f in fields(WorldModelConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - model_keys - train_keys)
    if unknown:
        raise ValueError(f'unknown --set keys {unknown}; model keys: {sorted(model_keys)}; '
                         f'training keys: {sorted(train_keys)}')
    return ({k: v for k, v in values.items() if k in model_keys},
            {k: v for k, v in values.items() if k in train_keys})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='jepa train', description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', action='append', required=True,
                        help='a rosbag2 bag, a folder of bags, a quoted glob or a LeRobot dataset (repeatable)')
    parser.add_argument('--out', required=True, help='checkpoint to write (a PNG of the training curves and a '
                        'JSON summary are written next to it)')
    parser.add_argument('--minutes', type=float, default=15.0, help='wall-clock training budget')
    parser.add_argument('--steps', type=int, default=None, help='stop after this many steps (default: budget only)')
    parser.add_argument('--device', default='auto', help='auto (cuda if available), cpu, cuda, cuda:N')
    parser.add_argument('--resume', default=None, help='checkpoint to continue from (model, optimizer, history)')
    parser.add_argument('--cache', default=None, help='directory for decoded-bag caches (default: user cache)')
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                        help='model or training config value, e.g. --set latent_dim=32 --set lr=3e-4')
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: all cores)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-progress', action='store_true', help='no tqdm bars (logs only)')
    add_arm_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`jepa train`, as one process or as each process of `torchrun --nproc_per_node N` (see start_job)."""
    args = build_parser().parse_args(argv)
    command = ' '.join(['jepa', 'train', *(sys.argv[1:] if argv is None else argv)])
    try:
        job, device = start_job(args.device)
    except ValueError as exc:
        print(f'jepa train: {exc}', file=sys.stderr)
        return 2
    try:
        return train_from_args(args, command, job, device)
    finally:
        end_job(job)


def train_from_args(args: argparse.Namespace, command: str, job: Job, device: torch.device) -> int:
    try:
        model_values, train_values = split_overrides(parse_overrides(args.overrides))
        if args.resume:
            checkpoint, model_id = read_checkpoint(args.resume)
            model = model_from_checkpoint(checkpoint, args.resume, model_id)
            requested = WorldModelConfig.from_dict({**model.config.to_dict(), **model_values}).to_dict()
            changed = sorted(k for k, v in requested.items() if v != model.config.to_dict()[k])
            if changed:
                raise ValueError(f'--resume keeps the model config of {args.resume}; cannot change {changed}')
            resumed = checkpoint.get('train_state') or {}
            cfg = TrainConfig.from_dict({**resumed.get('config', {}), **train_values})
            state = TrainState(**{k: resumed[k] for k in ('step', 'seconds', 'samples', 'history', 'validations')
                                  if k in resumed})
            optimizer_state = resumed.get('optimizer')
            provenance = dict(checkpoint['provenance'])
            provenance['commands'] = list(provenance.get('commands', [])) + [command]
            layout, note = layout_for_checkpoint(args, provenance, args.resume)
            if note and job.is_main:
                print(f'jepa train: {note}', file=sys.stderr)
        else:
            torch.manual_seed(args.seed)   # --seed fixes the initial weights too
            model = WorldModel(WorldModelConfig.from_dict(model_values))
            cfg = TrainConfig.from_dict(train_values)
            state, optimizer_state = TrainState(), None
            provenance = {'commands': [command], 'created': now_iso()}
            layout = arm_layout(args)
        torch.manual_seed(args.seed + state.step)
        # A machine's first process decodes the bags into the cache; the others there read what it cached.
        ticks = job.local_main_first(lambda: load_bags(args.bag, args.cache, model.image_size, layout=layout))
    except (BagError, CheckpointError, ValueError) as exc:
        print(f'jepa train: {exc}', file=sys.stderr)
        return 2
    set_threads(args.threads)
    known = {b['path']: b for b in provenance.get('bags', [])}
    known.update({source['path']: source for source in ticks.sources})
    provenance.update({'bags': list(known.values()), 'git_commit': git_commit(), 'updated': now_iso(),
                       'host': platform.node(), 'torch': str(torch.__version__), 'device': str(device),
                       'world_size': job.world_size, 'backend': job.backend})
    if not layout.is_default:
        # The arm the model learned (the simulated Panda when absent).
        provenance['arm'] = layout.to_dict()
    out = Path(args.out)
    # What the training images look like: perception refuses live frames far from them (its frame check).
    image_record = ImageReference.of_images(ticks.images, 'training images').to_dict()
    arm = '' if layout.is_default else f' of {layout.describe()}'
    processes = f' in each of {job.world_size} processes ({job.backend})' if job.world_size > 1 else ''
    if job.is_main:
        print(f'jepa train: {len(ticks)} ticks from {len(ticks.sources)} bag(s){arm}, {model_parameter_count(model)} '
              f'parameters, device {device}, {torch.get_num_threads()} threads{processes}, budget {args.minutes} '
              'min', file=sys.stderr)
    derived = sum(source.get('actions') == 'derived_from_joint_motion' for source in ticks.sources)
    if derived and job.is_main:
        print(f'jepa train: {derived} bag(s) without /jepa/action: actions derived from the recorded joint motion',
              file=sys.stderr)

    def write(state: TrainState, optimizer_state: dict | None) -> None:
        last = state.validations[-1] if state.validations else {}
        metrics = {'steps': state.step, 'train_seconds': state.seconds, 'samples': state.samples,
                   'validation': {k: v for k, v in last.items() if k != 'embedding_corr'}, METRICS_KEY: image_record}
        train_state = {'config': asdict(cfg), **asdict(state)}
        if optimizer_state is not None:
            train_state['optimizer'] = optimizer_state
        save_checkpoint(model, out, provenance, metrics, extra={'train_state': train_state})
        plot_training(state, out.with_suffix('.png'), f'{out.name}: step {state.step}, {state.seconds / 60:.1f} min')

    try:
        state, optimizer_state = train_world_model(model, ticks, cfg, device, args.minutes * 60.0, args.steps, state,
                                                   optimizer_state, args.seed, write if job.is_main else None,
                                                   not args.no_progress, job)
    except KeyboardInterrupt:
        print('jepa train: interrupted; the last validated checkpoint is kept', file=sys.stderr)
        return 130
    except (ValueError, FloatingPointError) as exc:
        print(f'jepa train: {exc}', file=sys.stderr)
        return 1
    if job.is_main:
        print(f'jepa train: wrote {out} ({model.model_id}) after {state.step} steps, {state.seconds / 60:.1f} min',
              file=sys.stderr)
    return 0


def model_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


if __name__ == '__main__':
    sys.exit(main())
