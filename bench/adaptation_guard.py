"""Does a camera glitch change what the agent learns? Adjustments (surprise triggers) over nominal running on the
simulator and under bursts of 50 corrupt camera frames of each kind: noise, black, frozen (the last frame
repeated while the arm moves on), wrong size (disagreeing with the camera info).

In one process, without ROS, the modules' own cores in the graph's order: the simulated camera -> perception's
frame check and encoder (jepa_perception.frame_check.FrameCheck.latent, the shipped checkpoint) -> the world
model's one-step surprise (OnlinePredictor) -> the configurator's SurpriseMonitor (config/agent.yaml's settings),
with the short-term memory's TransitionAssembler counting what it would keep. Nominal running: the scripted
oracle reaches the evaluation's reach goals, holding still for 1 s after each episode (a still scene renders
identically, and perception, which pairs each frame with the joint state, encodes it: the arm did not move).
Each burst replaces 50 camera frames (5 s at 10 Hz) from the start of an episode on, while the oracle moves the
arm (a frozen frame while the arm rests shows the scene as it is, and is kept like any still scene).

Baseline in the same run: the same frames unguarded (no frame check: every frame encoded, a wrong size resized)
into the former monitor (5 consecutive surprising callbacks, no time span or gaps). Prints figures and whether the target (0 adjustments) was met; asserts nothing.
--quick: 1 simulated minute of nominal running instead of 30 (tens of seconds).

    .venv/bin/python bench/adaptation_guard.py [--quick] [--minutes 30]
"""
import argparse
import time

import numpy as np
import torch

from jepa_bringup.episodes import DT, OraclePolicy, episode_steps
from jepa_bringup.sim_episodes import SimWorkbench, agent_params
from jepa_perception.encoder import ImageEncoder
from jepa_perception.frame_check import FrameCheck, FrameCheckConfig
from jepa_configurator.configurator import SurpriseMonitor, expected_surprise
from jepa_short_term_memory.memory import ShortTermMemory, TransitionAssembler
from jepa_world_model.runtime import OnlinePredictor, resolve_checkpoint

BURST = 50
KINDS = ('noise', 'black', 'frozen', 'wrong size')


def corrupt(kind: str, frame: np.ndarray, frozen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if kind == 'noise':
        return rng.integers(0, 256, frame.shape, dtype=np.uint8)
    if kind == 'black':
        return np.zeros_like(frame)
    if kind == 'frozen':
        return frozen
    return np.ascontiguousarray(np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1))  # twice the announced size


class Chain:
    """Perception (guarded or not) -> world-model surprise -> surprise monitor -> memory, for one frame stream."""

    def __init__(self, encoder: ImageEncoder, monitor: SurpriseMonitor, check: FrameCheck | None):
        self.encoder, self.monitor, self.check = encoder, monitor, check
        self.predictor = OnlinePredictor(encoder)  # the encoder is the loaded world model
        self.memory, self.assembler = ShortTermMemory(capacity=10 ** 6), TransitionAssembler()
        self.surprising = self.adjustments = 0

    def frame(self, rgb: np.ndarray, stamp: float, action: np.ndarray, joints: np.ndarray) -> None:
        if self.check is not None:
            latent, _ = self.check.latent(self.encoder, rgb, joints)
        else:
            image, _ = self.encoder.prepare(rgb)
            latent = self.encoder.encode_batch(image[None])[0]
        if latent is None:
            return
        stamp_ns = int(round(stamp * 1e9))
        _, surprise = self.predictor.observe_latent(latent, stamp_ns)
        self.predictor.observe_action(action, stamp_ns)
        self.memory.add(self.assembler.latent(stamp, latent, self.encoder.model_id))
        self.assembler.action(stamp, action)
        if surprise is not None:
            normalized = surprise[1]
            self.surprising += normalized > self.monitor.threshold * self.monitor.baseline
            self.adjustments += self.monitor.observe(normalized, stamp, self.encoder.model_id)

    def remembered_between(self, start: float, end: float) -> int:
        """Transitions in memory from or to a frame stamped in [start, end)."""
        return sum(start <= t.stamp < end or start <= t.next_stamp < end for t in self.memory.transitions)


def monitor_settings() -> dict:
    """The configurator's surprise settings as the graph runs them: config/agent.yaml's overrides, if any, on the
    SurpriseMonitor defaults."""
    return dict(agent_params().get('configurator', {}).get('surprise', {}))


def frame_check_settings() -> FrameCheckConfig:
    """Perception's frame check as the graph runs it: config/agent.yaml's overrides, if any, on the defaults."""
    return FrameCheckConfig(**agent_params().get('perception', {}).get('frame_check', {}))


class Run:
    """The simulator driven by the oracle through reach episodes; each frame goes to both chains."""

    def __init__(self, encoder: ImageEncoder, baseline: float):
        self.bench = SimWorkbench(encoder.model)
        camera = self.bench.sim.camera
        check = FrameCheck(frame_check_settings())
        check.expected_size = (camera.width, camera.height)  # what the sim node's CameraInfo says
        self.guarded = Chain(encoder, SurpriseMonitor(baseline=baseline, **monitor_settings()), check)
        self.unguarded = Chain(encoder, SurpriseMonitor(baseline=baseline, patience=5, min_span=0.0,
                                                        max_gap=float('inf'), cooldown=30.0), None)
        self.stamp = 0.0
        self.seed = 0
        self.steps_left = self.hold_steps = int(round(1.0 / DT))
        self.policy = None
        self.rng = np.random.default_rng(0)
        self.frozen: np.ndarray | None = None

    def _next_action(self) -> np.ndarray:
        """The oracle's action, a new reach episode when one ends (after 1 s held still), 0 while holding."""
        bench = self.bench
        if self.steps_left == 0:
            self.seed += 1
            goal, _ = bench.start_episode('reach', self.seed)
            self.stamp += 1.0  # a reset takes a moment in the graph too: a gap the surprise is not scored across
            self.policy = OraclePolicy(goal, bench.kinematics.max_step)
            self.steps_left = episode_steps(goal, bench.cube) + self.hold_steps
        self.steps_left -= 1
        if self.steps_left < self.hold_steps or self.policy is None:
            return np.zeros(4, np.float32)
        return self.policy.act(bench.ee, bench.cube).astype(np.float32)

    def step(self, kind: str = '') -> None:
        action = self._next_action()
        frame = self.bench.sim.render()
        if not kind:
            self.frozen = frame
        rgb = corrupt(kind, frame, self.frozen, self.rng) if kind else frame
        joints = self.bench.sim.joint_positions()  # the joint state perception pairs with the frame
        for chain in (self.guarded, self.unguarded):
            chain.frame(rgb, self.stamp, action, joints)
        if action.any():
            self.bench.command(action)
        self.bench.advance(DT)
        self.stamp += DT


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='1 simulated minute of nominal running')
    parser.add_argument('--minutes', type=float, default=30.0, help='simulated minutes of nominal running')
    args = parser.parse_args(argv)
    minutes = 1.0 if args.quick else args.minutes
    torch.set_num_threads(1)
    encoder = ImageEncoder('', 'cpu')
    baseline, _ = expected_surprise(resolve_checkpoint(''))
    run = Run(encoder, baseline)
    started = time.perf_counter()

    frames = int(round(minutes * 60 / DT))
    for _ in range(frames):
        run.step()
    g, u = run.guarded, run.unguarded
    print(f'nominal: {minutes:g} simulated min ({frames} frames, {run.seed} reach episodes), model {encoder.model_id}, '
          f'surprising above {g.monitor.threshold} x {baseline:.4g}')
    print(f'  guarded: refused {g.check.counts}, '
          f'{g.surprising} surprising steps, {g.adjustments} adjustments; memory {len(g.memory)} transitions')
    print(f'  unguarded: {u.surprising} surprising steps, {u.adjustments} adjustments')
    nominal_adjustments = g.adjustments

    burst_adjustments = 0
    for kind in KINDS:
        # Nominal running, then the burst from the start of an episode, while the oracle moves the arm: a frozen
        # picture of a resting arm would show the scene as it is.
        for _ in range(int(round(3.0 / DT))):
            run.step()
        while run.steps_left != 0:
            run.step()
        start, counts = run.stamp, dict(g.check.counts)
        before = (g.surprising, g.adjustments, u.surprising, u.adjustments)
        for _ in range(BURST):
            run.step(kind)
        end = run.stamp
        refused = {k: v - counts[k] for k, v in g.check.counts.items() if v > counts[k]}
        for _ in range(int(round(5.0 / DT))):  # and after it, within the surprise monitor's window
            run.step()
        burst_adjustments += g.adjustments - before[1]
        print(f'burst of {BURST} {kind} frames: guarded: refused {sum(refused.values())} of them {refused}, '
              f'{g.surprising - before[0]} surprising steps, {g.adjustments - before[1]} adjustments, '
              f'{g.remembered_between(start, end)} transitions remembered | unguarded: {u.surprising - before[2]} '
              f'surprising steps, {u.adjustments - before[3]} adjustments, {u.remembered_between(start, end)} '
              'transitions remembered')
    total = nominal_adjustments + burst_adjustments
    print(f'adjustments with the guard: {total} over {minutes:g} min nominal and {len(KINDS)} bursts of {BURST} '
          f'corrupt frames (target 0: {"met" if total == 0 else "MISSED"}); unguarded: {u.adjustments} '
          f'({time.perf_counter() - started:.0f} s)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
