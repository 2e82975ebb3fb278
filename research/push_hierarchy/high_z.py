"""§23: the higher level with a latent variable z that carries what its macro-actions do not determine (whether
and how far a push moves the cube), planned optimistically.

§16-§22: the deterministic level regresses contact outcomes to their mean, so it predicts real pushes to do less
than they do, and the search prefers plans it is wrong about. Here the predictor also reads z (z_dim numbers, one
per 3-s window): in training z comes from a posterior that sees where the window really went, KL-bounded towards
N(0, I); in planning each candidate is scored under `draws` prior samples of z (the same samples for every
candidate of one plan) and keeps its cheapest: the best outcome the model deems possible, as §7 did with an
earlier, deterministic-data model. The sub-goal is the first latent of the chosen plan under its cheapest z.
§24: with --conditional-prior the KL and the planning draws use p(z | s, m) instead of N(0, I), and
`OptimisticActor.reduce = 'mean'` scores the expected cost over the draws instead of the cheapest.

Training goes through `jepa train-high-level` unchanged (bags, weights, held-out split, encoding), with its
training function swapped for `train_z`:
    python high_z.py --z-dim 4 --beta 0.02 -- <jepa train-high-level arguments>
"""
import argparse
import math
import sys
import time
from dataclasses import asdict

import torch
from torch import nn

import jepa_world_model.train_high_level as packaged
from jepa_actor.actor import Actor
from jepa_cost.cost import SubgoalObjective
from jepa_world_model.high_level import HighLevelConfig, HighLevelModel, fit_statistics, predictor_mlp, \
    training_windows


class HighLevelZ(HighLevelModel):
    def __init__(self, latent_dim: int, config: HighLevelConfig, encoder_id: str, max_step: float,
                 library_size: int = 0, z_dim: int = 4, conditional_prior: bool = False):
        super().__init__(latent_dim, config, encoder_id, max_step, library_size)
        self.z_dim, self.conditional_prior = z_dim, conditional_prior
        self.net = predictor_mlp(latent_dim + 4 + z_dim, latent_dim, config)
        H = config.rollout_macros
        self.posterior = nn.Sequential(nn.Linear(latent_dim * (H + 1) + 4 * H, 256), nn.GELU(),
                                       nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 2 * z_dim))
        # §24: p(z | s, m), so that planning draws the outcomes likely from this state under these macro-actions.
        self.prior = nn.Sequential(nn.Linear(latent_dim + 4 * H, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(),
                                   nn.Linear(256, 2 * z_dim)) if conditional_prior else None

    def step(self, latent, macro, z):
        return latent + self.net(torch.cat([(latent - self.mean) / self.std, macro, z], -1)) * self.delta_std

    def rollout(self, latent: torch.Tensor, macros: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = latent.new_zeros(latent.shape[0], self.z_dim)
        out = []
        for h in range(macros.shape[1]):
            latent = self.step(latent, macros[:, h], z)
            out.append(latent)
        return torch.stack(out, 1)

    def infer(self, start, macros, targets):
        """q(z | the window): (mean, log variance), each (B, z_dim)."""
        x = torch.cat([(start - self.mean) / self.std,
                       ((targets - start[:, None]) / self.delta_std).flatten(1), macros.flatten(1)], -1)
        mean, log_var = self.posterior(x).chunk(2, -1)
        return mean, log_var.clamp(-8, 4)

    def prior_of(self, start, macros):
        """p(z | s, m): (mean, log variance), each (B, z_dim); N(0, I) without a conditional prior."""
        if self.prior is None:
            zeros = start.new_zeros(start.shape[0], self.z_dim)
            return zeros, zeros
        mean, log_var = self.prior(torch.cat([(start - self.mean) / self.std, macros.flatten(1)], -1)).chunk(2, -1)
        return mean, log_var.clamp(-8, 4)

    def save(self, path, provenance=None) -> None:
        torch.save({'kind': 'research_high_level_z', 'latent_dim': self.latent_dim, 'config': asdict(self.config),
                    'encoder_id': self.encoder_id, 'max_step': self.max_step, 'library_size': len(self.library),
                    'z_dim': self.z_dim, 'conditional_prior': self.conditional_prior,
                    'state_dict': self.state_dict(), 'provenance': provenance or {}}, str(path))

    @classmethod
    def load(cls, path, encoder_id=None, latent_dim=None) -> 'HighLevelZ':
        blob = torch.load(str(path), map_location='cpu', weights_only=False)
        assert blob['kind'] == 'research_high_level_z', path
        assert encoder_id is None or blob['encoder_id'] == encoder_id, (blob['encoder_id'], encoder_id)
        model = cls(blob['latent_dim'], HighLevelConfig.from_dict(blob['config']), blob['encoder_id'],
                    blob['max_step'], blob['library_size'], blob['z_dim'], blob.get('conditional_prior', False))
        model.load_state_dict(blob['state_dict'])
        model.provenance = blob['provenance']
        return model.eval()


def train_z(episodes, config, encoder_id, max_step, latent_scale, log=print, repeats=None, z_dim=4, beta=0.02,
            conditional_prior=False):
    """train_high_level's recipe (split, windows, weights, epochs, best held-out epoch) for HighLevelZ, plus
    beta x KL(q(z | window) || its prior: N(0, I), or p(z | s, m) with conditional_prior) per window. Held-out
    error is reported at z = 0 and at the posterior."""
    (S, M, T), (Sv, Mv, Tv), library, _ = training_windows(episodes, config, max_step, repeats)
    torch.manual_seed(config.seed)
    model = HighLevelZ(S.shape[1], config, encoder_id, max_step, len(library), z_dim, conditional_prior)
    fit_statistics(model, S, T, library)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs)
    step_weights = config.step_decay ** torch.arange(config.rollout_macros, dtype=torch.float32)
    change = (T - S[:, None]).pow(2).mean(-1)
    window_weights = 1.0 + config.change_weight * change / change.mean()

    def error(predicted, target):
        return (predicted - target).pow(2).mean(-1) / latent_scale

    generator = torch.Generator().manual_seed(config.seed)
    start, best, epochs = time.monotonic(), (math.inf, None, None, None), 0
    for epoch in range(config.epochs):
        model.train()
        for rows in torch.randperm(len(S), generator=generator).split(config.batch):
            noisy = S[rows] + config.input_noise * torch.randn(len(rows), S.shape[1], generator=generator) * model.std
            mean, log_var = model.infer(S[rows], M[rows], T[rows])
            z = mean + (0.5 * log_var).exp() * torch.randn(mean.shape, generator=generator)
            prior_mean, prior_log_var = model.prior_of(S[rows], M[rows])
            kl = 0.5 * (prior_log_var - log_var + (log_var.exp() + (mean - prior_mean).pow(2)) / prior_log_var.exp()
                        - 1).sum(-1)
            weights = window_weights[rows]
            fit = (error(model.rollout(noisy, M[rows], z), T[rows]) * step_weights * weights).sum(-1) / weights.mean()
            loss = (fit + beta * kl).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        model.eval()
        with torch.no_grad():
            at_zero = error(model.rollout(Sv, Mv), Tv).mean(0)
            mean, _ = model.infer(Sv, Mv, Tv)
            at_posterior = error(model.rollout(Sv, Mv, mean), Tv).mean(0)
        epochs = epoch + 1
        if float(at_zero.mean()) < best[0]:
            best = (float(at_zero.mean()), {k: v.clone() for k, v in model.state_dict().items()}, at_zero,
                    at_posterior)
        log(f'epoch {epoch}: loss {float(loss.detach()):.4f} (KL {float(kl.mean().detach()):.3f} nats/window), '
            'held-out error at z=0 ' + ' '.join(f'{v:.3f}' for v in at_zero.tolist()) + ', at the posterior '
            + ' '.join(f'{v:.3f}' for v in at_posterior.tolist()) + f' ({time.monotonic() - start:.0f} s)')
        if time.monotonic() - start > config.time_budget_s:
            break
    model.load_state_dict(best[1])
    copy_last = error(Sv[:, None].expand_as(Tv), Tv).mean(0)
    report = {'train_windows': len(S), 'heldout_windows': len(Sv), 'library': len(library), 'epochs': epochs,
              'seconds': round(time.monotonic() - start, 1), 'z_dim': z_dim, 'beta': beta,
              'conditional_prior': conditional_prior,
              'heldout_error_per_macro': [round(v, 4) for v in best[2].tolist()],
              'heldout_error_at_posterior': [round(v, 4) for v in best[3].tolist()],
              'copy_last_error_per_macro': [round(v, 4) for v in copy_last.tolist()]}
    return model.eval(), report


class OptimisticObjective(SubgoalObjective):
    """SubgoalObjective under `draws` prior samples of z (common to all candidates): each candidate's cheapest."""

    def __init__(self, *args, draws: int, generator: torch.Generator, reduce: str = 'min'):
        super().__init__(*args)
        self.noise = torch.randn(draws, self.model.z_dim, generator=generator)
        self.reduce = reduce

    def rollouts(self, macros):   # -> (K, B, H, D)
        K, B = len(self.noise), macros.shape[0]
        mean, log_var = self.model.prior_of(self.z0.expand(B, -1), macros)
        z = (mean + (0.5 * log_var).exp() * self.noise[:, None]).reshape(K * B, -1)
        latents = self.model.rollout(self.z0.expand(K * B, -1), macros.repeat(K, 1, 1), z)
        return latents.reshape(K, B, *latents.shape[1:])

    def costs(self, macros):   # -> (K, B)
        difference = self.rollouts(macros)[:, :, -1] - self.goal
        return self.latent * self.metric.isotropic(difference) \
            + self.energy * self.metric.controllable(difference, self.max_step) \
            + self.effort * macros[..., :3].pow(2).sum(-1).mean(-1)

    def __call__(self, macros):
        costs = self.costs(macros)
        return costs.min(0).values if self.reduce == 'min' else costs.mean(0)

    def rollout(self, macros):   # the plan's latents under its cheapest z (min) or its median-cost z (mean)
        costs = self.costs(macros)
        best = costs.argmin(0) if self.reduce == 'min' else costs.median(0).indices
        return self.rollouts(macros)[best, torch.arange(macros.shape[0])]


class OptimisticActor(Actor):
    """The shipped actor whose higher level (a HighLevelZ) scores plans optimistically over z."""
    draws = 8
    reduce = 'min'

    def subgoal_objective(self, z, goal):
        if not hasattr(self, 'z_generator'):
            self.z_generator = torch.Generator().manual_seed(self.config.seed + 7)
        c = self.config
        return OptimisticObjective(self.high_level, self.intrinsic.metric, z, goal, c.subgoal_energy,
                                   c.subgoal_latent, c.subgoal_effort, c.max_step, draws=self.draws,
                                   generator=self.z_generator, reduce=self.reduce)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--z-dim', type=int, default=4)
    ap.add_argument('--beta', type=float, default=0.02)
    ap.add_argument('--conditional-prior', action='store_true')
    split = sys.argv.index('--') if '--' in sys.argv else len(sys.argv)
    a, theirs = ap.parse_args(sys.argv[1:split]), sys.argv[split + 1:]
    packaged.train_high_level = lambda *args, **kw: train_z(*args, **kw, z_dim=a.z_dim, beta=a.beta,
                                                                 conditional_prior=a.conditional_prior)
    sys.argv = ['jepa train-high-level (research high_z.py --z-dim %d --beta %g%s)'
                % (a.z_dim, a.beta, ' --conditional-prior' if a.conditional_prior else '')] \
        + theirs
    return packaged.main(theirs)


if __name__ == '__main__':
    sys.exit(main())
