"""ROS-free cores of the agent: planners, intrinsic cost, critic, short-term memory, Mode-1 distillation."""
import functools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from jepa_actor.actor import Actor, ActorConfig
from jepa_cost.cost import ArmContext, Critic, CostWeights, IntrinsicCost, PlanObjective, train_critic
from jepa_short_term_memory.memory import COST_FIELDS, ShortTermMemory, TransitionAssembler
from jepa_actor.planner import CEMPlanner, MPPIPlanner
from jepa_actor.policy import PolicyDistiller, ReactivePolicy

LOW, HIGH = [-0.03, -0.03, -0.03, -1.0], [0.03, 0.03, 0.03, 1.0]


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """These networks are tiny: extra threads only contend with the other processes of a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LinearModel(nn.Module):
    """z' = z + B a: the latent moves linearly with the action (a toy world model with the real API)."""

    def __init__(self, latent_dim=6, action_dim=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.B = nn.Parameter(torch.randn(latent_dim, action_dim, generator=g) * torch.tensor([20., 20., 20., 0.5]))
        self.latent_dim, self.action_dim, self.model_id = latent_dim, action_dim, 'toy-linear'

    def predict(self, z, action, latent_var=None):
        return z + action @ self.B.T

    def rollout(self, z0, actions):
        return z0[:, None, :] + torch.cumsum(actions @ self.B.T, dim=1)


def quadratic(target):
    return lambda actions: (actions - target).pow(2).sum((-1, -2))


@pytest.mark.parametrize('planner_cls', [MPPIPlanner, CEMPlanner])
def test_sampling_planners_find_the_optimum_of_a_quadratic(planner_cls):
    target = torch.tensor([0.01, -0.02, 0.015, 0.5]).expand(5, -1) * torch.linspace(0.2, 1, 5)[:, None]
    scale = torch.tensor([0.03, 0.03, 0.03, 1.0])
    objective = lambda a: ((a - target) / scale).pow(2).sum((-1, -2))  # noqa: E731
    planner = planner_cls(LOW, HIGH, horizon=5, samples=512, iterations=8, grad_steps=0, seed=1)
    result = planner.plan(objective)
    start_cost = float(objective(torch.zeros(1, 5, 4)))
    assert result.cost < 0.02 * start_cost
    assert torch.allclose(result.actions, target, atol=0.15 * scale.max())


def test_actions_stay_in_bounds_even_when_the_optimum_is_outside():
    planner = MPPIPlanner(LOW, HIGH, horizon=4, samples=128, iterations=3, grad_steps=20, seed=0)
    scale = torch.tensor(HIGH)
    result = planner.plan(lambda a: (a / scale - torch.tensor([2.0, -2.0, 2.0, 5.0])).pow(2).sum((-1, -2)))
    assert torch.all(result.actions <= torch.tensor(HIGH) + 1e-6) and torch.all(result.actions >= torch.tensor(LOW) - 1e-6)
    # The constrained optimum is the corner of the box.
    assert torch.allclose(result.actions, torch.tensor([0.03, -0.03, 0.03, 1.0]).expand(4, -1), atol=0.01)


def test_gradient_refinement_improves_on_sampling_through_a_world_model():
    model = LinearModel()
    goal = model.rollout(torch.zeros(1, 6), torch.tensor([[[0.02, -0.01, 0.015, 0.3]] * 6]))[0, -1]
    intrinsic = IntrinsicCost(CostWeights(effort=0.0))
    objective = PlanObjective(model, intrinsic, torch.zeros(6), goal)
    sampled = MPPIPlanner(LOW, HIGH, horizon=6, samples=64, iterations=2, grad_steps=0, seed=3).plan(objective)
    refined = MPPIPlanner(LOW, HIGH, horizon=6, samples=64, iterations=2, grad_steps=20, seed=3).plan(objective)
    assert refined.sampled_cost == pytest.approx(sampled.cost)
    assert refined.cost < 0.5 * sampled.cost


def test_warm_start_shifts_the_previous_plan():
    planner = CEMPlanner(LOW, HIGH, horizon=3, samples=16, iterations=1, grad_steps=0)
    planner.previous = torch.tensor([[0.01, 0, 0, 0], [0.02, 0, 0, 0], [0.03, 0, 0, 0]])
    assert planner.warm_start()[:, 0].tolist() == pytest.approx([0.02, 0.03, 0.03])
    planner.reset()
    assert torch.all(planner.warm_start() == 0)


def test_proposals_are_used_when_they_are_best():
    target = torch.tensor([0.03, 0.03, -0.03, 1.0]).expand(4, -1)
    planner = CEMPlanner(LOW, HIGH, horizon=4, samples=8, iterations=1, grad_steps=0, init_std=0.01, seed=0)
    result = planner.plan(quadratic(target), proposals=target[None])
    assert result.cost == pytest.approx(0.0, abs=1e-9)


def test_intrinsic_terms_penalize_what_they_name():
    cost = IntrinsicCost()
    goal = torch.zeros(3)
    latents = torch.tensor([[[0.0, 0, 0]], [[1.0, 1, 1]]])
    actions = torch.zeros(2, 1, 4)
    arm = ArmContext(ee=torch.tensor([0.5, 0.0, 0.3]), q=torch.tensor([0.0, 0.95]), dq_dx=torch.tensor([[10.0, 0, 0], [0, 0, 0]]),
                     lower=torch.tensor([-1.0, -1.0]), upper=torch.tensor([1.0, 1.0]),
                     workspace=torch.tensor([[0.25, 0.75], [-0.35, 0.35], [0.02, 0.6]]))
    terms = cost.terms(latents, goal, actions, arm)
    assert terms['energy'][:, 0].tolist() == [0.0, 1.0]
    assert float(terms['effort'].abs().sum()) == 0.0
    assert float(terms['joint_limits'][0, 0]) > 0  # joint 2 sits at 97.5 % of its range
    assert float(terms['workspace'].sum()) == 0.0
    moving = torch.tensor([[[0.03, 0.0, 0.0, 0.0]] * 10])  # 0.3 m in x: out of the box, joint 1 to its limit
    terms = cost.terms(torch.zeros(1, 10, 3), goal, moving, arm)
    assert float(terms['effort'][0, 0]) == pytest.approx(1 / 3)
    assert float(terms['workspace'][0, -1]) > float(terms['workspace'][0, 0]) == 0.0
    assert float(terms['joint_limits'][0, -1]) > float(terms['joint_limits'][0, 0])
    assert float(terms['hand'].abs().sum()) == 0.0  # no hand goal set
    # A hand goal 2 control steps ahead in x: the hand term counts the squared steps still missing after each step.
    toward = replace(arm, hand_goal=arm.ee + torch.tensor([0.06, 0.0, 0.0]))
    terms = cost.terms(torch.zeros(1, 3, 3), goal, torch.tensor([[[0.03, 0.0, 0.0, 0.0]] * 3]), toward)
    assert terms['hand'][0].tolist() == pytest.approx([1.0, 0.0, 1.0], abs=1e-5)


def chain_episodes(n_states=8, episodes=40, discount=0.9, seed=0):
    """A chain s_0 -> ... -> s_{n-1} (goal, absorbing) with cost 1 per step off the goal."""
    rng = np.random.default_rng(seed)
    embed = rng.normal(size=(n_states, 5)).astype(np.float32)
    goal = embed[-1]
    out = []
    for _ in range(episodes):
        start = rng.integers(0, n_states - 1)
        s = np.arange(start, n_states + 3).clip(max=n_states - 1)
        costs = (s[:-1] != n_states - 1).astype(np.float32)
        out.append({'states': embed[s[:-1]], 'next_states': embed[s[1:]], 'costs': costs,
                    'goals': np.repeat(goal[None], len(costs), 0)})
    true_value = np.array([(1 - discount ** (n_states - 1 - i)) / (1 - discount) for i in range(n_states)])
    return out, embed, goal, true_value


@pytest.mark.parametrize('method', ['td', 'mc'])
def test_critic_learns_the_cost_to_go_of_a_chain(method):
    episodes, embed, goal, true_value = chain_episodes()
    critic, report = train_critic(episodes, method=method, discount=0.9, epochs=300, seed=0)
    assert report.transitions == sum(len(e['costs']) for e in episodes)
    with torch.no_grad():
        predicted = critic(torch.as_tensor(embed), torch.as_tensor(goal)).numpy()
    # MC returns of episodes cut at the chain end are exact; TD bootstraps to the same fixed point.
    assert np.abs(predicted - true_value).max() < 0.1 * true_value.max()


@pytest.mark.parametrize('make', [lambda: Critic(np.int64(5), model_id='m1', discount=np.float64(0.8)),
                                  lambda: ReactivePolicy(np.int64(5), LOW, HIGH, hidden=16, model_id='m1')],
                         ids=['critic', 'policy'])
def test_critic_and_policy_checkpoints_round_trip_and_mismatch(make, tmp_path):
    """Sizes given as numpy numbers are saved as plain values, so the (weights-only) load reads them back."""
    from jepa_actor.policy import PolicyError
    from jepa_cost.cost import CriticError
    module = make()
    cls, error = (Critic, CriticError) if isinstance(module, Critic) else (ReactivePolicy, PolicyError)
    module.save(tmp_path / 'c.pt')
    z = torch.randn(3, 5)
    loaded = cls.load(tmp_path / 'c.pt', latent_dim=5, model_id='m1')
    assert torch.allclose(loaded(z, z[0]), module(z, z[0]))
    with pytest.raises(error, match='c.pt: .* for latent_dim 5, the model has 6'):
        cls.load(tmp_path / 'c.pt', latent_dim=6)
    with pytest.raises(error, match="c.pt: .* trained on latents of 'm1', not 'm2'"):
        cls.load(tmp_path / 'c.pt', model_id='m2')
    (tmp_path / 'bad.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(error, match='bad.pt: cannot read a'):
        cls.load(tmp_path / 'bad.pt')


class _NotData:
    """A pickled object a weights_only load refuses: loading a checkpoint never runs its code."""


def test_versioned_checkpoints_refuse_what_they_cannot_use_naming_the_file(tmp_path):
    """The policy's and critic's loaders (the shared jepa_world_model.versioned) raise their own error class naming
    the file: missing, of another kind, of another format version (with how to make a usable one), lacking a key,
    holding objects rather than data, or a config its state_dict does not fit."""
    from jepa_actor.policy import POLICY_FORMAT_VERSION, PolicyError
    from jepa_cost.cost import CRITIC_FORMAT_VERSION, CriticError
    with pytest.raises(CriticError, match='absent.pt: cannot read a critic .FileNotFoundError'):
        Critic.load(tmp_path / 'absent.pt')
    Critic(3).save(tmp_path / 'critic.pt')
    with pytest.raises(PolicyError, match="critic.pt: not a policy checkpoint .its kind is 'jepa_critic'"):
        ReactivePolicy.load(tmp_path / 'critic.pt')
    torch.save([1, 2], tmp_path / 'list.pt')
    with pytest.raises(CriticError, match='list.pt: not a critic checkpoint .it holds a list'):
        Critic.load(tmp_path / 'list.pt')
    torch.save({'kind': 'jepa_policy', 'format_version': POLICY_FORMAT_VERSION - 1}, tmp_path / 'old.pt')
    with pytest.raises(PolicyError, match=f'old.pt: policy of format {POLICY_FORMAT_VERSION - 1}, this code reads '
                                          f'format {POLICY_FORMAT_VERSION}: .*distil it again'):
        ReactivePolicy.load(tmp_path / 'old.pt')
    torch.save({'kind': 'jepa_critic', 'format_version': CRITIC_FORMAT_VERSION, 'config': {}}, tmp_path / 'bare.pt')
    with pytest.raises(CriticError, match=r"bare.pt: critic checkpoint lacks \['state_dict'\]"):
        Critic.load(tmp_path / 'bare.pt')
    torch.save({'kind': 'jepa_critic', 'format_version': CRITIC_FORMAT_VERSION, 'config': _NotData()},
               tmp_path / 'object.pt')
    with pytest.raises(CriticError, match='object.pt: cannot read a critic .UnpicklingError'):
        Critic.load(tmp_path / 'object.pt')
    torch.save({'kind': 'jepa_critic', 'format_version': CRITIC_FORMAT_VERSION, 'config': {'latent_dim': 4},
                'state_dict': Critic(3).state_dict()}, tmp_path / 'mixed.pt')
    with pytest.raises(CriticError, match='mixed.pt: inconsistent critic .RuntimeError'):
        Critic.load(tmp_path / 'mixed.pt')


def feed(assembler, memory, n, start=0.0, dt=0.1, dim=3):
    for i in range(n):
        stamp = start + i * dt
        t = assembler.latent(stamp, np.full(dim, i, np.float32))
        if t is not None:
            memory.add(t)
        # Cost, prediction and action of a state may arrive in any order, stamped after that state.
        assembler.prediction(stamp, np.full(dim, i + 1, np.float32))
        assembler.action(stamp + 0.01, np.array([i, 0, 0, 1], np.float32))
        assembler.cost(stamp, np.arange(len(COST_FIELDS), dtype=np.float32))


def test_memory_is_bounded_and_pairs_streams_into_transitions():
    memory, assembler = ShortTermMemory(capacity=50), TransitionAssembler()
    feed(assembler, memory, 30)
    memory.add(assembler.flush())
    assert len(memory) == 29
    t = memory.transitions[5]
    assert t.state[0] == 5 and t.next_state[0] == 6 and t.action[0] == 5 and t.predicted_next[0] == 6
    assert t.intrinsic_cost == sum(range(len(COST_FIELDS) - 1))  # every term but the critic
    feed(assembler, memory, 100, start=100.0)  # a gap: new episode
    assert len(memory) == 50 and memory.dropped == 29 + 98 - 50
    episodes = memory.episodes()
    assert len(episodes) == 1 and episodes[0]['next_states'][-1][0] == 98
    restored = ShortTermMemory.from_arrays(memory.to_arrays(), capacity=50)
    assert np.array_equal(restored.episodes()[0]['next_states'], episodes[0]['next_states'])


def test_late_messages_still_join_their_transition():
    memory, assembler = ShortTermMemory(), TransitionAssembler()
    assembler.latent(0.0, np.zeros(3))
    assembler.latent(0.1, np.ones(3))
    assembler.cost(0.0, np.ones(len(COST_FIELDS)))       # after the next latent already came
    assembler.prediction(0.0, np.full(3, 0.9))
    assembler.action(0.05, np.array([0.01, 0, 0, 1]))
    t = assembler.latent(0.2, np.full(3, 2.0))
    assert t.cost_terms.tolist() == [1] * len(COST_FIELDS) and t.predicted_next[0] == pytest.approx(0.9)
    assert t.action[0] == pytest.approx(0.01)
    assert assembler.latent(0.2, np.full(3, 2.0)) is None  # a duplicate changes nothing
    t = assembler.flush()
    assert np.isnan(t.action).all() and np.isnan(t.cost_terms).all()


def test_goal_change_starts_a_new_episode():
    memory, assembler = ShortTermMemory(), TransitionAssembler()
    assembler.goal(np.zeros(3, np.float32))
    feed(assembler, memory, 5)
    memory.add(assembler.goal(np.ones(3, np.float32)))
    feed(assembler, memory, 5, start=0.5)
    memory.add(assembler.flush())
    episodes = memory.episodes()
    assert [len(e['costs']) for e in episodes] == [4, 4]
    assert episodes[1]['goals'][0].tolist() == [1, 1, 1]


def test_policy_distillation_reduces_imitation_error():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = ReactivePolicy(6, LOW, HIGH, hidden=64)
    distiller = PolicyDistiller(policy, lr=3e-3)
    teacher = lambda z, g: np.clip(np.r_[0.05 * (g - z)[:3], np.sign(g[3] - z[3])], LOW, HIGH)  # noqa: E731
    for _ in range(400):
        z, g = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
        distiller.add(z, g, teacher(z, g))
    before = distiller.imitation_error()
    distiller.fit(400)
    assert distiller.imitation_error() < 0.3 * before


def test_the_policy_reads_where_the_goal_lies_so_it_carries_over_to_goals_it_was_not_taught():
    """Taught on 4 goals (episodes walking towards each), the policy imitates the teacher on 200 new goals better
    than the same network reading (state, goal) does: a goal takes one value per episode, goal - state varies at
    every step."""
    class StateGoalPolicy(ReactivePolicy):
        def forward(self, z, goal):
            return self.low + (self.net(torch.cat([z, goal.expand_as(z)], dim=-1)) + 1) / 2 * (self.high - self.low)

    def new_goal_error(cls, seed: int) -> float:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        teacher = lambda z, g: np.clip(np.r_[0.05 * (g - z)[:3], np.sign(g[3] - z[3])], LOW, HIGH)  # noqa: E731
        distiller = PolicyDistiller(cls(6, LOW, HIGH, hidden=64), lr=3e-3)
        for goal in rng.normal(size=(4, 6)).astype(np.float32):
            z = rng.normal(size=6).astype(np.float32)
            for _ in range(50):
                distiller.add(z, goal, teacher(z, goal))
                z = z + 0.1 * (goal - z) + 0.05 * rng.normal(size=6).astype(np.float32)
        distiller.fit(600)
        new = PolicyDistiller(distiller.policy)
        for goal in rng.normal(size=(200, 6)).astype(np.float32):
            z = goal + 0.5 * rng.normal(size=6).astype(np.float32)
            new.add(z, goal, teacher(z, goal))
        return new.imitation_error()

    relative = np.mean([new_goal_error(ReactivePolicy, seed) for seed in range(3)])
    absolute = np.mean([new_goal_error(StateGoalPolicy, seed) for seed in range(3)])
    assert relative < 0.7 * absolute, (relative, absolute)


def test_actor_mode2_reaches_toward_the_goal_and_mode1_follows_distilled_plans():
    torch.manual_seed(0)
    model = LinearModel()
    actor = Actor(model, ActorConfig(horizon=5, samples=128, iterations=2, grad_steps=2, distill_every=5,
                                     distill_steps=30))
    goal = model.rollout(torch.zeros(1, 6), torch.tensor([[[0.03, 0.03, -0.02, 1.0]] * 8]))[0, -1].numpy()
    z = np.zeros(6, np.float32)
    start = float(((z - goal) ** 2).mean())
    for _ in range(8):
        decision = actor.act(z, goal)
        assert decision.actions.shape == (5, 4) and decision.latents.shape == (5, 6)
        z = model.predict(torch.as_tensor(z)[None], torch.as_tensor(decision.action)[None])[0].numpy()
    assert float(((z - goal) ** 2).mean()) < 0.1 * start
    assert actor.distiller.updates > 0
    labelled = len(actor.distiller.examples)
    for _ in range(actor.config.dagger_every):
        decision = actor.act(np.zeros(6, np.float32), goal, mode='mode1')
    assert decision.mode == 'mode1' and np.all(np.abs(decision.action) <= np.array(HIGH) + 1e-6)
    assert len(actor.distiller.examples) == labelled + 1  # DAgger: Mode-2 labelled a state the policy visited


def test_critic_is_the_terminal_cost_of_a_plan():
    model = LinearModel()
    critic = Critic(6)
    weights = CostWeights(critic=2.0)
    objective = PlanObjective(model, IntrinsicCost(weights), torch.zeros(6), torch.ones(6), critic=critic)
    actions = torch.rand(3, 4, 4) * 0.06 - 0.03
    total, latents, terms = objective.evaluate(actions)
    with torch.no_grad():
        expected = 2.0 * critic(latents[:, -1], torch.ones(6))
    assert torch.allclose(terms['critic'], expected)
    assert torch.allclose(total, sum(terms.values()))
    no_critic = PlanObjective(model, IntrinsicCost(CostWeights(critic=0.0)), torch.zeros(6), torch.ones(6), critic=critic)
    assert 'critic' not in no_critic.evaluate(actions)[2]


def test_surprise_monitor_fires_after_a_streak_and_respects_the_cooldown():
    from jepa_configurator.configurator import SurpriseMonitor, task_weights
    # Errors in units of the model's own held-out error (baseline 0.01): threshold 5 -> 0.05. Here only the
    # count of consecutive steps matters (the time span and gaps: tests/test_adaptation_guard.py).
    monitor = SurpriseMonitor(threshold=5.0, baseline=0.01, patience=3, min_span=0.0, max_gap=math.inf, cooldown=10.0)
    fired = [monitor.observe(e, t) for t, e in enumerate([0.06, 0.06, 0.04, 0.06, 0.06, 0.06, 0.06, 0.06, 0.06,
                                                          float('nan')])]
    assert fired == [False, False, False, False, False, True, False, False, False, False]
    # Still surprised when the cooldown ends: it fires again at once.
    assert [monitor.observe(0.06, 20.0 + t) for t in range(3)] == [True, False, False]
    assert monitor.fired == 2
    # A model that errs more on its own data is not surprised by the same errors.
    calm = SurpriseMonitor(threshold=5.0, baseline=0.02, patience=1, min_span=0.0, cooldown=0.0)
    assert not any(calm.observe(0.06, t) for t in range(5))
    # Only the model in service is surprised; a new one starts a new streak against its own baseline.
    served = SurpriseMonitor(threshold=5.0, baseline=0.01, patience=2, min_span=0.0, max_gap=math.inf, cooldown=0.0,
                             model_id='old')
    assert not served.observe(0.06, 0.0, 'old') and served.streak == 1
    served.serve('new', 0.01)
    assert served.streak == 0
    assert [served.observe(0.06, t, m) for t, m in enumerate(['old', 'old', 'new', 'new'])] == [False] * 3 + [True]
    assert served.other_model == 2
    # A streak begun in one task does not carry into the next.
    served.observe(0.06, 10.0, 'new')
    served.new_task()
    assert not served.observe(0.06, 11.0, 'new') and served.streak == 1


def test_hand_reading_check_fires_on_a_drifted_reading_not_on_an_offset_a_glitch_or_a_still_hand():
    from jepa_configurator.configurator import HandReadingCheck
    rng = np.random.default_rng(0)

    def feed(check, seconds, read_of, start=0.0, move=True):
        """10 Hz of a hand moving on a circle of 10 cm (or still), read as read_of(hand, t) says."""
        fired = []
        for t in np.arange(start, start + seconds, 0.1):
            hand = np.array([0.5 + 0.1 * np.cos(t), 0.1 * np.sin(t), 0.2]) if move else np.array([0.5, 0.0, 0.2])
            if check.observe(t, read_of(hand, t), hand):
                fired.append(round(t, 1))
        return fired

    check = HandReadingCheck(window=5.0, windows=5, threshold=0.03, min_motion=0.02, cooldown=20.0)
    # Read right up to a constant offset, with 1 cm of noise: never.
    assert feed(check, 60, lambda h, t: h + 0.2 + rng.normal(0, 0.01, 3)) == []
    assert check.counted >= 10 and check.highest_median < 0.02
    # 3 s read 20 cm off (a glitch; it may straddle two windows): the median of five does not move.
    assert feed(check, 3, lambda h, t: h + rng.normal(0, 0.2, 3), start=60) == []
    assert feed(check, 27, lambda h, t: h + 0.2, start=63) == []
    # A reading that scales the motion (a moved camera): fires once 3 of the 5 windows hold it; then again only
    # after 5 new windows (and the cooldown).
    fired = feed(check, 50, lambda h, t: 1.6 * h, start=90)
    assert len(fired) == 2 and 100 <= fired[0] <= 106 and fired[1] - fired[0] >= 25, fired
    # The drift began with the oldest window above the threshold of the first firing (within a window of the true
    # start), and stays there while the same model is in service: later play adds to what a re-calibration learns
    # from.
    assert 85 <= check.drift_since <= 91
    # Resets teleport the hand between places the linear map reads with different offsets: a window ends at each
    # jump, so the offsets' difference is not taken for a drift (without the cut it would be).
    def teleporting(check):
        fired = []
        for t in np.arange(0, 60, 0.1):
            place = int(t // 3.7) % 2
            hand = np.array([0.4 + 0.3 * place + 0.1 * np.cos(t), 0.1 * np.sin(t), 0.2])
            fired += [t] if check.observe(t, hand + 0.08 * place, hand) else []
        return fired

    resets = HandReadingCheck(window=5.0, windows=3, threshold=0.03, cooldown=0.0)
    assert teleporting(resets) == [] and resets.counted >= 10
    assert teleporting(HandReadingCheck(window=5.0, windows=3, threshold=0.03, cooldown=0.0, max_jump=10.0))
    # A still hand says nothing about the reading, however wrong.
    still = HandReadingCheck(window=5.0, windows=1, threshold=0.03, cooldown=0.0)
    assert feed(still, 30, lambda h, t: h + rng.normal(0, 0.1, 3), move=False) == [] and still.counted == 0
    # Time restarting (a replay) or a new model in service starts the count again.
    check.restart()
    assert math.isnan(check.drift_since)
    assert feed(check, 12, lambda h, t: 1.6 * h, start=200) == []
    with pytest.raises(ValueError, match='threshold'):
        HandReadingCheck(threshold=0.0)


def test_play_ring_keeps_the_last_seconds_and_restarts_with_time():
    from jepa_short_term_memory.memory import PlayRing
    ring = PlayRing(seconds=2.0)
    for i in range(50):  # 10 Hz for 5 s
        ring.add('/camera/image_raw' if i % 2 else '/joint_states', i * 100_000_000, bytes(10))
    assert ring.seconds == pytest.approx(2.0) and len(ring) == 21 and ring.bytes == 210
    assert PlayRing.counts(ring.since()) == {'/camera/image_raw': 11, '/joint_states': 10}  # messages 29..49
    assert len(ring.since(4_500_000_000)) == 5 and PlayRing.span(ring.since(4_500_000_000)) == pytest.approx(0.4)
    ring.add('/joint_states', 0, b'x')  # the clock restarted: what came before is another stretch of time
    assert len(ring) == 1 and ring.restarts == 1
    none = PlayRing(seconds=0.0)
    none.add('/joint_states', 1, b'x')
    assert len(none) == 0
    with pytest.raises(ValueError, match='0..3600'):
        PlayRing(seconds=-1.0)


def test_task_profiles_live_once_and_a_params_file_overrides_only_what_it_names():
    from jepa_configurator.configurator import TASK_PROFILES, TASKS, SurpriseMonitor, TaskProfile, task_levels, \
        task_skill, task_weights
    assert task_weights('reach') == CostWeights() and task_weights('reach').critic == 0.0
    overridden = task_weights('reach', {'reach': {'energy': 2.0, 'critic': 0.5}, 'push': {'latent': 9.0}})
    assert overridden.energy == 2.0 and overridden.critic == 0.5 and task_weights('push_one_level').latent == 1.0
    with pytest.raises(ValueError, match='swim'):
        task_weights('swim', {'reach': {}})
    with pytest.raises(ValueError, match='speed'):
        task_weights('reach', {'reach': {'speed': 1.0}})
    with pytest.raises(ValueError, match='energy'):
        task_weights('reach', {'reach': {'energy': -1.0}})
    # The scripted push skill is the push_skill task's higher level only; idle and the pushes adjust nothing.
    assert {task: task_skill(task) for task in TASKS} == {'reach': '', 'push': '', 'push_one_level': '',
                                                          'push_skill': 'push', 'idle': ''}
    # Push plans with the learned higher level; its one_level ablation and everything else with one level.
    assert {task for task in TASKS if task_levels(task) == 2} == {'push'}
    assert task_skill('push_one_level', {'push_one_level': 'push'}) == 'push'
    with pytest.raises(ValueError, match='levels'):
        task_skill('push', {'push': 'push'})   # the learned higher level, or a scripted one: not both
    assert task_levels('push', {'push': 2}) == 2 and task_levels('reach', {'push': 2}) == 1
    with pytest.raises(ValueError, match='levels'):
        task_levels('push_skill', {'push_skill': 2})   # its scripted skill is its higher level
    with pytest.raises(ValueError, match='levels'):
        task_levels('reach', {'reach': 3})
    with pytest.raises(ValueError, match='juggle'):
        task_skill('reach', {'reach': 'juggle'})
    assert {task for task, profile in TASK_PROFILES.items() if profile.adjust == ()} == {'push', 'push_one_level',
                                                                                         'push_skill', 'idle'}
    assert TASK_PROFILES['reach'].adjust is None  # what the configurator's `adjust` says
    with pytest.raises(ValueError, match='dance'):
        TaskProfile(adjust=('critic', 'dance'))
    with pytest.raises(ValueError, match='patience'):
        SurpriseMonitor(patience=0)


def test_cost_weights_refuse_what_the_cost_cannot_use():
    from jepa_common.settings import config_fields
    assert CostWeights(energy=2).energy == 2.0 and isinstance(CostWeights(energy=2).energy, float)
    for bad in (-0.1, float('nan'), float('inf'), 'heavy', True):
        with pytest.raises(ValueError, match='cost weight hand'):
            CostWeights(hand=bad)
    # Every weight is a live parameter with a description and a range from 0.
    assert [f.name for f in config_fields(CostWeights)] == list(CostWeights.names())
    assert all(f.metadata['live'] and f.metadata['description'] and f.metadata['span'][0] == 0.0
               for f in config_fields(CostWeights))


def test_actor_config_validates_itself_and_max_step_is_fixed_at_start():
    from jepa_common.settings import config_fields
    for bad in ({'horizon': 0}, {'planner': 'random'}, {'discount': 1.5}, {'dagger_every': -1}, {'levels': 3}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ActorConfig(**bad)
    # Every setting is live but the arm's action bound, which is not a parameter of the actor at all.
    assert {f.name for f in config_fields(ActorConfig)} == set(ActorConfig.names()) - {'max_step'}
    assert all(f.metadata['live'] for f in config_fields(ActorConfig))
    actor = Actor(LinearModel(), ActorConfig(horizon=3, samples=8, iterations=1, grad_steps=0))
    actor.reconfigure(horizon=4, planner='cem')
    assert actor.config.horizon == 4 and actor.planner.horizon == 4 and type(actor.planner).__name__ == 'CEMPlanner'
    with pytest.raises(ValueError, match='max_step'):
        actor.reconfigure(max_step=0.05)
    with pytest.raises(ValueError, match='samples'):
        actor.reconfigure(horizon=6, samples=0)
    assert actor.config.horizon == 4 and actor.config.max_step == 0.03


def test_expected_surprise_is_the_checkpoints_held_out_one_step_error(tmp_path):
    from jepa_configurator.configurator import expected_surprise
    from jepa_world_model.model import CheckpointError, WorldModel, WorldModelConfig, save_checkpoint
    model = WorldModel(WorldModelConfig(image_size=16, encoder_channels=(4, 4), keypoints=0, latent_dim=8))
    save_checkpoint(model, tmp_path / 'trained.pt', metrics={'validation': {'normalized_error': [0.006, 0.02]}})
    baseline, model_id = expected_surprise(str(tmp_path / 'trained.pt'))
    assert baseline == pytest.approx(0.006) and model_id == model.model_id
    save_checkpoint(model, tmp_path / 'untrained.pt')
    assert expected_surprise(str(tmp_path / 'untrained.pt'))[0] is None
    (tmp_path / 'broken.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='broken.pt'):
        expected_surprise(str(tmp_path / 'broken.pt'))


def test_energy_is_normalized_by_the_models_latent_variance():
    model = LinearModel()
    model.register_buffer('latent_var', torch.full((6,), 4.0))
    from jepa_cost.cost import EnergyMetric
    assert EnergyMetric.of(model).latent_scale == 4.0
    assert EnergyMetric.of({'latent_var': torch.zeros(6)}).latent_scale == 1.0
    actor = Actor(model, ActorConfig(horizon=2, samples=8, iterations=1, grad_steps=0))
    terms = actor.intrinsic.terms(torch.full((1, 1, 6), 2.0), torch.zeros(6), torch.zeros(1, 1, 4))
    assert float(terms['energy']) == pytest.approx(1.0)


def test_energy_measures_controllable_displacement_through_the_inverse_dynamics_map():
    """A model whose inverse-dynamics head reads the end-effector step from latent dims 0-2 only: the energy
    counts those dims in control steps; the latent term sees every dim."""
    from jepa_cost.cost import EnergyMetric
    state = {'latent_var': torch.ones(6), 'action_scale': torch.tensor([0.03, 0.03, 0.03, 1.0]),
             'inverse_translation.weight': torch.cat([torch.eye(3), torch.zeros(3, 3)], dim=1)}
    intrinsic = IntrinsicCost(CostWeights(), max_step=0.03, metric=EnergyMetric.of(state))
    latents = torch.tensor([[[2.0, 0, 0, 0, 0, 0], [0, 0, 0, 6.0, 0, 0]]])
    terms = intrinsic.terms(latents, torch.zeros(6), torch.zeros(1, 2, 4))
    # One latent unit along dim 0 is one 3 cm step (max_step): 2 units, energy 4. Dim 3 is not controllable.
    assert terms['energy'][0].tolist() == pytest.approx([4.0, 0.0])
    assert terms['latent'][0].tolist() == pytest.approx([4.0 / 6, 6.0])
    # A model without the map: the controllable term falls back to the isotropic one.
    fallback = IntrinsicCost(metric=EnergyMetric.of({'latent_var': torch.ones(6)})).terms(
        latents, torch.zeros(6), torch.zeros(1, 2, 4))
    assert torch.equal(fallback['energy'], fallback['latent'])


class EndEffectorModel(nn.Module):
    """A world model whose latent is the end-effector position (in decimetres): exact for ee_delta actions."""
    latent_dim, action_dim, model_id = 3, 4, 'ee-model'

    def predict(self, z, action, latent_var=None):
        return z + action[..., :3] * 10

    def rollout(self, z0, actions):
        return z0[:, None, :] + torch.cumsum(actions[..., :3] * 10, dim=1)


def test_actor_reaches_a_goal_with_the_arm_in_the_loop():
    from jepa_common.kinematics import PANDA_HOME, ArmKinematics
    kinematics = ArmKinematics()
    actor = Actor(EndEffectorModel(), ActorConfig(horizon=5, samples=64, iterations=2, grad_steps=2), kinematics=kinematics)
    q = np.array(PANDA_HOME)
    target = np.array([0.5, 0.15, 0.25])
    start = np.linalg.norm(kinematics.fk(q) - target)
    for _ in range(25):
        decision = actor.act(kinematics.fk(q) * 10, target * 10, q)
        assert np.allclose(decision.ee_path[0], kinematics.fk(q))
        q, _ = kinematics.action_to_joint_target(q, decision.action)
    assert start > 0.25 and np.linalg.norm(kinematics.fk(q) - target) < 0.03


@functools.lru_cache(maxsize=1)
def toy_high_level(macro_steps: int = 3, seed: int = 0):
    """A higher level trained on random play of EndEffectorModel's world (latent = hand position in dm), trained
    once for the tests that use it."""
    from jepa_world_model.high_level import HighLevelConfig, train_high_level
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(16):
        actions = np.c_[rng.uniform(-0.03, 0.03, (60, 3)), rng.uniform(-1, 1, (60, 1))].astype(np.float32)
        latents = np.r_[rng.uniform(-4, 4, (1, 3)), np.zeros((60, 3))].astype(np.float32)
        latents[1:] = latents[0] + np.cumsum(actions[:, :3] * 10, axis=0)
        episodes.append((latents, actions))
    config = HighLevelConfig(macro_steps=macro_steps, rollout_macros=3, hidden=64, dropout=0.0, epochs=40,
                             change_weight=0.0, input_noise=0.0, lr=3e-3, seed=seed)
    return train_high_level(episodes, config, 'ee-encoder', 0.03, latent_scale=1.0, log=lambda line: None)


def test_higher_level_learns_what_a_macro_action_does_and_keeps_its_latent_space(tmp_path):
    from jepa_world_model.high_level import HighLevelError, HighLevelModel, macro_actions
    high_level, report = toy_high_level()
    # Three held-out macro-actions open loop: far better than assuming nothing changes.
    assert all(e < 0.2 * c for e, c in zip(report['heldout_error_per_macro'], report['copy_last_error_per_macro']))
    # A macro-action is the net hand displacement over its steps (in units of steps x max_step) and the mean gripper.
    steps = torch.tensor([[[0.03, 0.0, -0.03, 1.0], [0.03, 0.03, 0.0, -1.0], [0.0, 0.0, 0.0, 0.5]]])
    macro = macro_actions(steps, 0.03)
    assert torch.allclose(macro, torch.tensor([[2 / 3, 1 / 3, -1 / 3, 0.5 / 3]]))
    start = torch.tensor([[1.0, -2.0, 0.5]])
    with torch.no_grad():
        predicted = high_level.rollout(start, macro[:, None])[0, 0]
    assert torch.allclose(predicted, start[0] + torch.tensor([0.6, 0.3, -0.3]), atol=0.15)
    assert len(high_level.library) > 100 and high_level.library.abs().max() <= 1.0
    path = tmp_path / 'high.pt'
    high_level.save(path, {'bags': ['toy']})
    loaded = HighLevelModel.load(path, encoder_id='ee-encoder', latent_dim=3)
    with torch.no_grad():
        assert torch.equal(loaded.rollout(start, macro[:, None]), high_level.rollout(start, macro[:, None]))
    assert loaded.provenance == {'bags': ['toy']} and torch.equal(loaded.library, high_level.library)
    with pytest.raises(HighLevelError, match='encoder ee-encoder'):
        HighLevelModel.load(path, encoder_id='another')
    with pytest.raises(HighLevelError, match='3-d latents'):
        HighLevelModel.load(path, latent_dim=64)
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(HighLevelError, match='junk.pt'):
        HighLevelModel.load(tmp_path / 'junk.pt')
    torch.save({'kind': 'jepa_high_level', 'format_version': 0}, tmp_path / 'old.pt')
    with pytest.raises(HighLevelError, match='format 0'):
        HighLevelModel.load(tmp_path / 'old.pt')


def test_hierarchical_actor_plans_towards_the_learned_higher_levels_subgoal():
    """levels 2: the latent the learned higher level predicts after its first macro-action is the control level's
    goal; without a higher level, levels 2 is refused."""
    from jepa_common.kinematics import PANDA_HOME, ArmKinematics
    kinematics = ArmKinematics()
    config = ActorConfig(horizon=4, samples=64, iterations=2, grad_steps=2, levels=2, subgoal_every=2,
                         subgoal_horizon=3, subgoal_samples=64, subgoal_effort=0.05)
    with pytest.raises(ValueError, match='levels 2 needs a learned higher level'):
        Actor(EndEffectorModel(), config, kinematics=kinematics)
    high_level, _ = toy_high_level()
    actor = Actor(EndEffectorModel(), config, kinematics=kinematics, high_level=high_level)
    q = np.array(PANDA_HOME)
    target = np.array([0.5, 0.15, 0.25])
    subgoals = []
    for _ in range(30):
        z = kinematics.fk(q) * 10
        decision = actor.act(z, target * 10, q)
        subgoals.append(decision.subgoal)
        # One macro-action (3 steps of at most 0.03 m per axis) away from where it was set, with the model's error.
        assert decision.subgoal is not None and np.linalg.norm(decision.subgoal - z) <= 3 * 0.3 * 3 ** 0.5 + 0.3
        q, _ = kinematics.action_to_joint_target(q, decision.action)
    # The higher level replans every subgoal_every steps, not every step.
    changes = sum(not np.allclose(a, b) for a, b in zip(subgoals, subgoals[1:]))
    assert 5 <= changes <= 15
    assert np.linalg.norm(kinematics.fk(q) - target) < 0.04
    with pytest.raises(ValueError, match='levels'):
        actor.reconfigure(levels=3)
    assert actor.config.levels == 2
    flat = Actor(EndEffectorModel(), config.changed(levels=1), kinematics=kinematics)
    with pytest.raises(ValueError, match='levels 2 needs a learned higher level'):
        flat.reconfigure(levels=2)
    assert flat.config.levels == 1


def test_mode1_takes_its_subgoals_from_a_policy_distilled_from_the_higher_levels_plans():
    """levels 2, mode1_subgoals policy: Mode-2 teaches the sub-goal policy the higher level's first macro-actions;
    Mode-1 then reaches a goal it was not taught without searching at either level. With mode1_subgoals plan (the
    default) nothing teaches it."""
    from jepa_common.kinematics import PANDA_HOME, ArmKinematics
    kinematics = ArmKinematics()
    config = ActorConfig(horizon=4, samples=64, iterations=2, grad_steps=2, levels=2, subgoal_every=2,
                         subgoal_horizon=3, subgoal_samples=64, subgoal_effort=0.05, distill_steps=10)
    high_level, _ = toy_high_level()
    actor = Actor(EndEffectorModel(), config, kinematics=kinematics, high_level=high_level)

    def episode(target, mode, steps=30):
        q = np.array(PANDA_HOME)
        actor.reset()
        for _ in range(steps):
            decision = actor.act(kinematics.fk(q) * 10, np.asarray(target) * 10, q, mode=mode)
            q, _ = kinematics.action_to_joint_target(q, decision.action)
        return np.linalg.norm(kinematics.fk(q) - target), decision

    rng = np.random.default_rng(0)
    taught = [np.array([0.45, 0.0, 0.3]) + rng.uniform(-0.15, 0.15, 3) for _ in range(6)]
    episode(taught[0], 'mode2', steps=4)
    assert not actor.subgoal_distiller.examples   # mode1_subgoals plan: Mode-2 does not teach the sub-goal policy
    actor.reconfigure(mode1_subgoals='policy', dagger_every=0)
    for target in taught:
        episode(target, 'mode2')
    assert len(actor.subgoal_distiller.examples) == 6 * 15   # one label per search (every subgoal_every steps)
    assert actor.subgoal_distiller.updates == 6 * 15 * config.distill_steps

    new_goal = np.array([0.52, -0.08, 0.22])
    start = np.linalg.norm(kinematics.fk(np.array(PANDA_HOME)) - new_goal)
    searches, plan = [], actor.high_planner.plan
    actor.high_planner.plan = lambda *args, **kwargs: searches.append(1) or plan(*args, **kwargs)
    distance, decision = episode(new_goal, 'mode1')
    assert not searches and decision.subgoal_path.shape == (4, 3)
    assert start > 0.1 and distance < 0.3 * start, (start, distance)
    assert len(actor.subgoal_distiller.examples) == 6 * 15   # learning off: nothing labelled
    # With DAgger on, the higher level's search labels a state the sub-goal policy led to, every dagger_every steps.
    actor.reconfigure(dagger_every=5)
    episode(new_goal, 'mode1', steps=5)
    assert len(actor.subgoal_distiller.examples) == 6 * 15 + 1
    # In mode1 with the search's sub-goals (plan), nothing teaches the sub-goal policy.
    actor.reconfigure(mode1_subgoals='plan', dagger_every=0)
    episode(new_goal, 'mode1', steps=4)
    assert len(actor.subgoal_distiller.examples) == 6 * 15 + 1

    with pytest.raises(ValueError, match='mode1_subgoals'):
        actor.reconfigure(mode1_subgoals='search')
    with pytest.raises(ValueError, match='the Mode-1 policy must act within'):
        Actor(EndEffectorModel(), config, kinematics=kinematics, high_level=high_level, policy=actor.subgoal_policy)
    with pytest.raises(ValueError, match='the sub-goal policy must act within'):
        Actor(EndEffectorModel(), config, kinematics=kinematics, high_level=high_level, subgoal_policy=actor.policy)
    with pytest.raises(ValueError, match='needs a learned higher level'):
        Actor(EndEffectorModel(), config.changed(levels=1), kinematics=kinematics, subgoal_policy=actor.subgoal_policy)
