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
--effector-map (the variant): each adjustment also refits the effector map the cost measures distances with (the
inverse-dynamics head's linear translation map, `inverse_translation`: latent step -> hand step) on the same
transitions, ridge towards the map in service, kept under the same KeepIfBetter on held-out hand-step error; the
encoder, and so the latent space, stays.
Per episode: success, final distance, the one-step normalized prediction error of the model that planned it on
that episode's transitions, and the steps the configurator's SurpriseMonitor (defaults, baseline the checkpoint's
held-out error) counts as surprising; per arm, how often it would have fired.

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
from jepa_configurator.adjust_world_model import AdjustmentError, FineTuning, KeepIfBetter, fine_tune_predictor
from jepa_configurator.configurator import SurpriseMonitor, expected_surprise
from jepa_sim.perturbation import Perturbation
from jepa_world_model.model import default_checkpoint_path, load_checkpoint

TASK = 'reach'


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


def refit_effector_map(model, data: dict, holdout: float, keep: KeepIfBetter) -> dict:
    """Refit `model.inverse_translation` (latent step -> hand step / action_scale) in place on the older
    transitions, ridge towards the map in service; AdjustmentError unless the held-out hand-step error improves
    by KeepIfBetter's margin."""
    steps = data['next_states'] - data['states']
    scale = model.action_scale[:model.config.translation_dims]
    target = data['actions'][:, :len(scale)] / scale
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


def play(bench, actor, seed: int, label: str, log: list, monitor: SurpriseMonitor) -> tuple[dict, list]:
    transitions = []
    t0 = time.monotonic()
    result = run_episode(bench, actor, 'mode2', TASK, seed, transitions=transitions)
    errors = prediction_errors(actor.model, transitions)
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
          f'{"success" if result["success"] else "fail"}, prediction error {result["prediction_error"]:.3f} '
          f'({result["model_id"]}, {result["seconds"]:.0f} s)', flush=True)
    return result, transitions


def adjust(actor, seen: list, tuning, keep, seed: int, effector_map: bool) -> tuple[object | None, dict]:
    """(the adjusted model or None, the record): the predictor fine-tuned as the configurator does, and with
    `effector_map` the effector map refitted; each part kept only if KeepIfBetter says so."""
    data = as_data(seen)
    candidate = copy.deepcopy(actor.model)
    record = {'from_model': actor.model.model_id}
    try:
        record['predictor'] = {'kept': True, **fine_tune_predictor(candidate, data, tuning, keep, seed=seed)}
    except AdjustmentError as exc:
        candidate = copy.deepcopy(actor.model)  # refused: the predictor in service stays
        record['predictor'] = {'kept': False, 'why': str(exc)}
    if effector_map:
        try:
            record['effector_map'] = {'kept': True, **refit_effector_map(candidate, data, tuning.holdout, keep)}
        except AdjustmentError as exc:
            record['effector_map'] = {'kept': False, 'why': str(exc)}
    record['kept'] = any(part['kept'] for part in (record['predictor'], record.get('effector_map', {'kept': False})))
    return (candidate if record['kept'] else None), record


def perturbed_arm(bench, start_actor, config, weights, perturbation, seeds, adjust_every, tuning, keep,
                  effector_map: bool, baseline: float, label) -> dict:
    """The perturbed episodes from a copy of `start_actor`; adjust_every 0 = never adjust."""
    actor = copy.deepcopy(start_actor)
    bench.model = actor.model
    bench.perturb(perturbation)
    monitor = SurpriseMonitor(baseline=baseline)
    episodes, adjustments, seen = [], [], []
    for i, seed in enumerate(seeds):
        _, transitions = play(bench, actor, seed, label, episodes, monitor)
        seen.extend(transitions)
        if adjust_every and (i + 1) % adjust_every == 0:
            t0 = time.monotonic()
            candidate, record = adjust(actor, seen, tuning, keep, len(adjustments), effector_map)
            if candidate is not None:
                candidate.model_id = f'adjusted-{len(adjustments) + 1}'
                previous, actor = actor, Actor(candidate, config, weights, bench.kinematics)
                actor.continue_from(previous)
                bench.model = candidate  # goals are encoded with the model in service, as perception does
            record.update(after_episode=i + 1, seconds=round(time.monotonic() - t0, 2))
            adjustments.append(record)
            for part in ('predictor', 'effector_map'):
                if part in record:
                    r = record[part]
                    print(f'{label} adjustment after {i + 1}, {part}: {"kept" if r["kept"] else "refused"} '
                          f'({record["seconds"]} s) {r.get("held_out_error_before", "")} -> '
                          f'{r.get("held_out_error_after", "")} {r.get("why", "")}', flush=True)
    return {'episodes': episodes, 'adjustments': adjustments, 'surprise_fired': monitor.fired,
            'surprising_steps': monitor.surprising, 'observed_steps': monitor.observed, **summary(episodes)}


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
    parser.add_argument('--effector-map', action='store_true',
                        help='the variant: each adjustment also refits the cost\'s effector map')
    parser.add_argument('--checkpoint', type=Path, default=None)
    parser.add_argument('--json', type=Path)
    add_perturbation_arguments(parser)
    args = parser.parse_args()
    arms = [a for a in args.arms.split(',') if a]
    if not arms or set(arms) - {'off', 'on'} or args.adjust_every < 1:
        parser.error('--arms: a comma-separated subset of off, on; --adjust-every >= 1')
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
    bench = SimWorkbench(model, sim_camera())
    report = {'args': {k: str(v) for k, v in vars(args).items()},
              'perturbation': {'names': names, 'settings': settings, 'values': perturbation.parameters()},
              'tuning': vars(tuning), 'keep_if_better': vars(KeepIfBetter()), 'model_id': model.model_id,
              'surprise_baseline': baseline, 'surprise_threshold': SurpriseMonitor().threshold}
    try:
        actor = Actor(model, config, weights, bench.kinematics)
        nominal, monitor = [], SurpriseMonitor(baseline=baseline)
        for seed in range(args.seed, args.seed + args.nominal):
            play(bench, actor, seed, 'nominal', nominal, monitor)
        report['nominal'] = {'episodes': nominal, 'surprise_fired': monitor.fired,
                             'surprising_steps': monitor.surprising, 'observed_steps': monitor.observed,
                             **summary(nominal)}
        seeds = list(range(args.seed + args.nominal, args.seed + args.nominal + args.perturbed))
        for arm in arms:
            report[arm] = perturbed_arm(bench, actor, config, weights, perturbation, seeds,
                                        args.adjust_every if arm == 'on' else 0, tuning, KeepIfBetter(),
                                        args.effector_map, baseline, arm)
            bench.perturb(Perturbation())
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
    finally:
        bench.close()
    for part in ('nominal', *arms):
        print(f'{part}: success {report[part]["success_rate"]:.0%} ({report[part]["successes"]}), last 10 '
              f'{report[part]["last10_success_rate"]:.0%}')
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
