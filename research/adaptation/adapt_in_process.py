"""Does the configurator's world-model adjustment recover Mode-2 reach under a perturbation? (in process)

The workbench (jepa_bringup.sim_episodes: the evaluation's goals, seeds, lengths and radii, the graph's actor
settings and reach cost) plays `--nominal` episodes in the nominal world, then `--perturbed` episodes in the
perturbed one, twice from the same actor state (the Mode-1 policy distilled over the nominal episodes included):
  off: the model in service throughout;
  on:  every `--adjust-every` perturbed episodes, the predictor is fine-tuned as the configurator's adjustment does
       (adjust_world_model.fine_tune_predictor: FineTuning / KeepIfBetter defaults unless --steps/--lr say
       otherwise) on all perturbed (latent, action, next latent) transitions so far, the agent's own, as the
       short-term memory stores them; a kept model replaces the one in service as the actor node hot-swaps one
       (a new Actor continuing from the previous: same encoder, Mode-1 policy carried over; goals encoded again).
--effector-map [actions|measured] (the variants): each adjustment also refits the effector map the cost measures
distances with (the inverse-dynamics head's linear translation map, `inverse_translation`: latent step -> hand
step) on the same transitions, ridge towards the map in service, kept under the same KeepIfBetter on held-out
hand-step error; the encoder, and so the latent space, stays. The hand step it learns: `actions`, the commanded
one; `measured`, the one the arm measured (forward kinematics of the joint states the commands were chosen at, the
arm's proprioception: no privileged simulator state). --encoder: each adjustment first fine-tunes the encoder on
the perturbed episodes' frames and the joints' hand positions, everything after it frozen
(jepa_configurator.adjust_encoder). --no-predictor leaves the predictor as it is. --after N: N more episodes with
the perturbation removed (forgetting); --memory K: each adjustment learns from the last K episodes only;
--save-episodes: the frames, actions and hand positions played, for encoder_tuning.py offline.
Per episode: success, final distance, the one-step normalized prediction error of the model that planned it on
that episode's transitions, and the steps the configurator's SurpriseMonitor (defaults, baseline the checkpoint's
held-out error) counts as surprising; per arm, how often it would have fired. Also, from the measured hand steps,
the gap between the hand step the effector map in service reads from each latent step and the one measured (a
surprise signal available every step), and the start distance to the goal that map reads against the true one.
At the end of an arm that changed the model, the effector map's readings on the oracle's paths (diag.readings)
before and after.

    nice -n 19 .venv/bin/python research/adaptation/adapt_in_process.py --perturb camera_moved --json cam.json
"""
import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from jepa_actor.actor import Actor
from jepa_bringup.episodes import DT, add_perturbation_arguments, perturbation_of, sim_camera
from jepa_bringup.sim_episodes import SimWorkbench, graph_settings, run_episode
from jepa_configurator.adjust_encoder import EncoderTuning, Episode, encode_episodes, fine_tune_encoder
from jepa_configurator.adjust_world_model import AdjustmentError, FineTuning, KeepIfBetter, fine_tune_predictor
from jepa_configurator.configurator import SurpriseMonitor, expected_surprise
from jepa_sim.perturbation import Perturbation
from jepa_cost.cost import EnergyMetric
from jepa_world_model.model import default_checkpoint_path, load_checkpoint, resize_rgb

from diag import readings
from encoder_tuning import save_played

TASK = 'reach'


class ProprioceptiveBench(SimWorkbench):
    """The workbench keeping, per episode, what the agent knows besides the latent: the joint state each command
    was chosen at (the arm's joint_states), the goal latent and the frames it encoded (at the model's size)."""
    frames = None

    def start_episode(self, task: str, seed: int):
        self.frames = None  # the goal image is not a frame of the episode
        goal, self.goal_latent = super().start_episode(task, seed)
        self.joints, self.frames = [], []
        return goal, self.goal_latent

    def encode(self, image: np.ndarray) -> np.ndarray:
        if self.frames is not None:
            self.frames.append(resize_rgb(image, self.model.image_size))
        return super().encode(image)

    def command(self, action: np.ndarray, q_arm: np.ndarray | None = None) -> None:
        self.joints.append(self.q_arm if q_arm is None else np.asarray(q_arm, dtype=float))
        super().command(action, q_arm)

    def measured_hand_positions(self) -> np.ndarray:
        """(commands + 1, 3) the hand's positions at the episode's frames, m: forward kinematics of the joint state
        each command was chosen at and of the one now."""
        return self.kinematics.fk(np.stack([*self.joints, self.q_arm]))


def as_data(transitions: list) -> dict:
    """[(latent, action, next latent)] -> the tensors fine_tune_predictor takes."""
    states, actions, next_states = (torch.as_tensor(np.stack(column), dtype=torch.float32)
                                    for column in zip(*transitions))
    return {'states': states, 'actions': actions, 'next_states': next_states}


def prediction_errors(model, transitions: list) -> np.ndarray:
    """One-step normalized prediction errors of `model` on the transitions."""
    data = as_data(transitions)
    with torch.no_grad():
        return model.normalized_error(model.predict(data['states'], data['actions']), data['next_states']).numpy()


def refit_effector_map(model, data: dict, hand_steps: torch.Tensor, holdout: float, keep: KeepIfBetter) -> dict:
    """Refit `model.inverse_translation` (latent step -> hand step / action_scale) in place on the older
    transitions, `hand_steps` (m, one per transition) its targets, ridge towards the map in service;
    AdjustmentError unless the held-out hand-step error improves by KeepIfBetter's margin."""
    steps = data['next_states'] - data['states']
    scale = model.action_scale[:model.config.translation_dims]
    target = hand_steps / scale
    n = len(steps)
    n_val = max(1, int(round(holdout * n)))
    keep.windows(n_val)
    current = model.inverse_translation.weight.detach().clone()
    d, y = steps[:n - n_val].double(), target[:n - n_val].double()
    gram = d.T @ d
    ridge = 0.1 * float(torch.trace(gram)) / gram.shape[0]  # a correction to the map in service, not a new one
    fitted = torch.linalg.solve(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype),
                                d.T @ y + ridge * current.T.double()).T.float()

    def errors(weight):  # squared hand-step error, m^2
        return ((steps[n - n_val:] @ weight.T - target[n - n_val:]) * scale).pow(2).sum(1).numpy()

    figures = keep.judge(errors(current), errors(fitted), 'the refitted effector map')
    with torch.no_grad():
        model.inverse_translation.weight.copy_(fitted)
    return {'transitions': n - n_val, 'held_out': n_val, **figures}


def play(bench, actor, seed: int, label: str, log: list, monitor: SurpriseMonitor) -> tuple[dict, list, Episode]:
    """One Mode-2 episode: (its record, its transitions, its frames, actions and measured hand steps)."""
    transitions = []
    t0 = time.monotonic()
    result = run_episode(bench, actor, 'mode2', TASK, seed, transitions=transitions)
    hand_positions = bench.measured_hand_positions()
    hand_steps = np.diff(hand_positions, axis=0)
    if len(hand_steps) != len(transitions):
        raise RuntimeError(f'{len(hand_steps)} measured hand steps for {len(transitions)} transitions')
    errors = prediction_errors(actor.model, transitions)
    effector_map = EnergyMetric.of(actor.model).effector_map.numpy()
    latents = np.stack([t[0] for t in transitions] + [transitions[-1][2]])
    gap = np.linalg.norm(np.diff(latents, axis=0) @ effector_map.T - hand_steps, axis=1)
    result['map_gap_cm'] = 100 * float(gap.mean())  # |hand step the map reads - the one measured|
    result['measured_step_cm'] = 100 * float(np.linalg.norm(hand_steps, axis=1).mean())
    result['start_distance_read_m'] = float(np.linalg.norm(effector_map @ (bench.goal_latent - latents[0])))
    fired, surprising = monitor.fired, monitor.surprising
    start = 10.0 * len(log)  # episodes 10 s apart: a reset between two breaks a streak, as in the graph
    for i, error in enumerate(errors):
        monitor.observe(float(error), start + i * DT)
    result['prediction_error'] = float(errors.mean())
    result['surprising_steps'] = monitor.surprising - surprising
    result['surprise_fired'] = monitor.fired - fired
    result['model_id'] = actor.model.model_id
    result['seconds'] = round(time.monotonic() - t0, 1)
    log.append(result)
    print(f'{label} seed {seed}: {result["start_distance_m"]:.3f} -> {result["final_distance_m"]:.3f} m '
          f'{"success" if result["success"] else "fail"}, prediction error {result["prediction_error"]:.3f}, '
          f'start distance read {result["start_distance_read_m"]:.3f} m, map gap {result["map_gap_cm"]:.2f} of '
          f'{result["measured_step_cm"]:.2f} cm/step ({result["model_id"]}, {result["seconds"]:.0f} s)', flush=True)
    episode = Episode(np.stack(bench.frames), np.stack([t[1] for t in transitions]), hand_positions)
    if len(episode.frames) != len(transitions) + 1:
        raise RuntimeError(f'{len(episode.frames)} frames for {len(transitions)} transitions')
    return result, transitions, episode


def adjust(actor, seen: list, episodes: list, tuning, keep, seed: int, predictor: bool,
           effector_map: str | None, encoder: EncoderTuning | None) -> tuple[object | None, dict]:
    """(the adjusted model or None, the record): with `predictor` the predictor fine-tuned as the configurator
    does, with `effector_map` ('actions' or 'measured': its targets) the effector map refitted; each part kept only
    if KeepIfBetter says so; with `encoder`, the encoder fine-tuned first (encoder_tuning.py), the transitions
    encoded again with a kept one. `episodes`: the frames, actions and measured hand steps of the transitions
    `seen`."""
    candidate = copy.deepcopy(actor.model)
    record = {'from_model': actor.model.model_id}
    if encoder is not None:
        try:  # fine_tune_encoder works on a copy: refused, the deep copy above stays
            candidate, figures = fine_tune_encoder(actor.model, episodes, encoder, keep, seed=seed)
            record['encoder'] = {'kept': True, **figures}
        except AdjustmentError as exc:
            record['encoder'] = {'kept': False, 'why': str(exc)}
        if predictor or effector_map:
            # The transitions in the latents of the encoder now chosen (those played held earlier encoders').
            seen = [(a, b, c) for e, latents in zip(episodes, encode_episodes(candidate, episodes))
                    for a, b, c in zip(latents[:-1].numpy(), e.actions, latents[1:].numpy())]
    if not (predictor or effector_map):
        record['kept'] = record['encoder']['kept']
        return (candidate if record['kept'] else None), record
    data = as_data(seen)
    measured = np.concatenate([np.diff(e.hand_positions, axis=0) for e in episodes])
    if predictor:
        before = copy.deepcopy(candidate)
        try:
            record['predictor'] = {'kept': True, **fine_tune_predictor(candidate, data, tuning, keep, seed=seed)}
        except AdjustmentError as exc:
            candidate = before  # refused: the predictor in service stays
            record['predictor'] = {'kept': False, 'why': str(exc)}
    if effector_map:
        hand_steps = data['actions'][:, :3] if effector_map == 'actions' else \
            torch.as_tensor(measured, dtype=torch.float32)
        try:
            record['effector_map'] = {'kept': True, 'targets': effector_map,
                                      **refit_effector_map(candidate, data, hand_steps, tuning.holdout, keep)}
        except AdjustmentError as exc:
            record['effector_map'] = {'kept': False, 'targets': effector_map, 'why': str(exc)}
    record['kept'] = any(record[part]['kept'] for part in ('encoder', 'predictor', 'effector_map') if part in record)
    return (candidate if record['kept'] else None), record


def perturbed_arm(bench, start_actor, config, weights, perturbation, seeds, adjust_every, tuning, keep,
                  predictor: bool, effector_map: str | None, encoder: EncoderTuning | None, baseline: float, label,
                  reading_seeds, save_episodes: Path | None = None, after_seeds=(), memory: int = 0) -> dict:
    """The perturbed episodes from a copy of `start_actor`, then the `after_seeds` episodes with the perturbation
    removed; adjust_every 0 = never adjust; each adjustment learns from the last `memory` episodes (0: all)."""
    actor = copy.deepcopy(start_actor)
    bench.model = actor.model
    bench.perturb(perturbation)
    monitor = SurpriseMonitor(baseline=baseline)
    episodes, adjustments, seen, played = [], [], [], []
    for i, seed in enumerate([*seeds, *after_seeds]):
        if i == len(seeds):
            bench.perturb(Perturbation())
        _, transitions, episode = play(bench, actor, seed, label if i < len(seeds) else f'{label} removed', episodes,
                                       monitor)
        seen.append(transitions)
        played.append(episode)
        if adjust_every and (i + 1) % adjust_every == 0:
            t0 = time.monotonic()
            recent = slice(-memory if memory else 0, None)
            candidate, record = adjust(actor, [t for ts in seen[recent] for t in ts], played[recent], tuning, keep,
                                       len(adjustments), predictor, effector_map, encoder)
            if candidate is not None:
                candidate.model_id = f'adjusted-{len(adjustments) + 1}'
                previous, actor = actor, Actor(candidate, config, weights, bench.kinematics)
                actor.continue_from(previous)
                bench.model = candidate  # goals are encoded with the model in service, as perception does
            record.update(after_episode=i + 1, seconds=round(time.monotonic() - t0, 2))
            adjustments.append(record)
            for part in ('encoder', 'predictor', 'effector_map'):
                if part in record:
                    r = record[part]
                    print(f'{label} adjustment after {i + 1}, {part}: {"kept" if r["kept"] else "refused"} '
                          f'({record["seconds"]} s) {r.get("held_out_error_before", "")} -> '
                          f'{r.get("held_out_error_after", "")} {r.get("why", "")}', flush=True)
    if save_episodes:
        save_played(played, save_episodes.with_name(f'{save_episodes.stem}_{label}.npz'))
    if after_seeds:
        episodes, removed = episodes[:len(seeds)], episodes[len(seeds):]
    arm = {'episodes': episodes, 'adjustments': adjustments, 'surprise_fired': monitor.fired,
           'surprising_steps': monitor.surprising, 'observed_steps': monitor.observed, **summary(episodes)}
    if after_seeds:
        arm['removed'] = {'episodes': removed, **summary(removed)}
    if any(record['kept'] for record in adjustments) and reading_seeds:
        arm['readings'] = {'seeds': reading_seeds}
        for when, model in (('before', start_actor.model), ('after', actor.model)):
            r = readings(bench, model, reading_seeds)
            arm['readings'][when] = {'model_id': model.model_id,
                                     'hand_step_error_cm': 100 * float(np.mean(r['hand_step_error_m'])),
                                     'start_distance_read_m': r['start_distance_read_m'],
                                     'start_distance_true_m': r['start_distance_true_m']}
            print(f'{label} effector map {when} ({model.model_id}) on the oracle paths of {reading_seeds}: hand-step '
                  f'error {arm["readings"][when]["hand_step_error_cm"]:.2f} cm, start distance read '
                  f'{np.round(r["start_distance_read_m"], 3)} m vs true {np.round(r["start_distance_true_m"], 3)} m',
                  flush=True)
    return arm


def summary(episodes: list) -> dict:
    success = [bool(e['success']) for e in episodes]
    return {'success_rate': float(np.mean(success)), 'last10_success_rate': float(np.mean(success[-10:])),
            'successes': ''.join('1' if s else '0' for s in success)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--nominal', type=int, default=20)
    parser.add_argument('--perturbed', type=int, default=30)
    parser.add_argument('--seed', type=int, default=7000, help='first seed: nominal seeds, then perturbed ones')
    parser.add_argument('--adjust-every', type=int, default=5, help='perturbed episodes between adjustments')
    parser.add_argument('--arms', default='off,on', help='comma-separated: off, on')
    parser.add_argument('--steps', type=int, default=FineTuning.steps)
    parser.add_argument('--lr', type=float, default=FineTuning.lr)
    parser.add_argument('--effector-map', nargs='?', const='actions', choices=['actions', 'measured'],
                        help='the variants: each adjustment also refits the cost\'s effector map on the hand steps '
                             'commanded (actions, the default) or measured by the joints (measured)')
    parser.add_argument('--encoder', action='store_true',
                        help='each adjustment also fine-tunes the encoder on the perturbed frames (encoder_tuning.py)')
    parser.add_argument('--encoder-steps', type=int, default=EncoderTuning.steps)
    parser.add_argument('--encoder-lr', type=float, default=EncoderTuning.lr)
    parser.add_argument('--predictor', action=argparse.BooleanOptionalAction, default=True,
                        help='each adjustment fine-tunes the predictor (default); --no-predictor: not')
    parser.add_argument('--reading-seeds', default='7020,7021,7022,7050,7051,7052',
                        help='comma-separated seeds whose oracle paths measure the effector map before and after an '
                             'arm that changed the model ("" = none)')
    parser.add_argument('--after', type=int, default=0,
                        help='episodes played after the perturbed ones with the perturbation removed (forgetting)')
    parser.add_argument('--memory', type=int, default=0,
                        help='each adjustment learns from the last MEMORY episodes (0: all perturbed so far)')
    parser.add_argument('--save-episodes', type=Path,
                        help='NAME.npz: each perturbed arm\'s frames, actions and measured hand positions to NAME_ARM.npz '
                             '(encoder_tuning.py works on them offline)')
    parser.add_argument('--checkpoint', type=Path, default=None)
    parser.add_argument('--json', type=Path)
    add_perturbation_arguments(parser)
    args = parser.parse_args()
    arms = [a for a in args.arms.split(',') if a]
    if not arms or set(arms) - {'off', 'on'} or args.adjust_every < 1:
        parser.error('--arms: a comma-separated subset of off, on; --adjust-every >= 1')
    if not (args.predictor or args.effector_map or args.encoder):
        parser.error('--no-predictor without --effector-map or --encoder: the adjustment would change nothing')
    try:
        reading_seeds = [int(s) for s in args.reading_seeds.split(',') if s.strip()]
    except ValueError:
        parser.error(f'--reading-seeds {args.reading_seeds!r}: comma-separated integers')
    try:
        names, settings, perturbation = perturbation_of(args)
        tuning = FineTuning(args.steps, args.lr)
    except ValueError as exc:
        parser.error(str(exc))
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the Mode-1 policy's initial weights: one process plays like the next
    checkpoint = args.checkpoint or default_checkpoint_path()
    model = load_checkpoint(checkpoint)
    baseline, _ = expected_surprise(str(checkpoint))
    config, weights = graph_settings(TASK)
    bench = ProprioceptiveBench(model, sim_camera())
    report = {'args': {k: str(v) for k, v in vars(args).items()},
              'perturbation': {'names': names, 'settings': settings, 'values': perturbation.parameters()},
              'tuning': vars(tuning), 'keep_if_better': vars(KeepIfBetter()), 'model_id': model.model_id,
              'surprise_baseline': baseline, 'surprise_threshold': SurpriseMonitor().threshold}
    try:
        actor = Actor(model, config, weights, bench.kinematics)
        nominal, monitor, played = [], SurpriseMonitor(baseline=baseline), []
        for seed in range(args.seed, args.seed + args.nominal):
            played.append(play(bench, actor, seed, 'nominal', nominal, monitor)[2])
        if args.save_episodes:
            save_played(played, args.save_episodes.with_name(f'{args.save_episodes.stem}_nominal.npz'))
        report['nominal'] = {'episodes': nominal, 'surprise_fired': monitor.fired,
                             'surprising_steps': monitor.surprising, 'observed_steps': monitor.observed,
                             **summary(nominal)}
        seeds = list(range(args.seed + args.nominal, args.seed + args.nominal + args.perturbed))
        after_seeds = list(range(seeds[-1] + 1, seeds[-1] + 1 + args.after))
        for arm in arms:
            report[arm] = perturbed_arm(bench, actor, config, weights, perturbation, seeds,
                                        args.adjust_every if arm == 'on' else 0, tuning, KeepIfBetter(),
                                        args.predictor, args.effector_map,
                                        EncoderTuning(args.encoder_steps, args.encoder_lr) if args.encoder else None,
                                        baseline, arm, reading_seeds, args.save_episodes, after_seeds,
                                        args.memory)
            bench.perturb(Perturbation())
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
    finally:
        bench.close()
    for part in ('nominal', *arms):
        print(f'{part}: success {report[part]["success_rate"]:.0%} ({report[part]["successes"]}), last 10 '
              f'{report[part]["last10_success_rate"]:.0%}')
        if 'removed' in report[part]:
            print(f'{part}, perturbation removed: success {report[part]["removed"]["success_rate"]:.0%} '
                  f'({report[part]["removed"]["successes"]})')
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
