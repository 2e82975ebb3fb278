"""`jepa train` and `jepa train-critic` under torchrun: two CPU processes (gloo) on a tiny real bag stay in sync step
by step, take the steps one process takes on the same global batch, end a time budget at the same step, and only
rank 0 writes the checkpoint, which records the job.

Run as a script (by torchrun, see `torchrun_jepa`), this file is the worker: it runs the `jepa` command lines it is
given (jepa_bringup.cli.main, what the `jepa` script runs) and records, per command, every process's parameters
after each training step and what it wrote."""
import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TORCHRUN = Path(sys.executable).with_name('torchrun')
# A small model and batch: the test is about the job, not the model.
SMALL = ['--device', 'cpu', '--no-progress', '--threads', '1', '--set', 'latent_dim=16',
         '--set', 'encoder_channels=[8, 8, 16, 16]', '--set', 'predictor_hidden=64', '--set', 'batch_size=4',
         '--set', 'sequence_length=8', '--set', 'horizon=3', '--set', 'val_fraction=0.2']
# The training's clock moves this many seconds a reading, times 1 + the process's rank (see SteppingClock).
CLOCK_TICK = 0.01


class SteppingClock:
    """A clock for jepa_world_model.train that moves `tick` seconds each time it is read: what a time budget and a
    validation interval come to in steps does not depend on the machine's load. One process and rank 0 of a job
    read it alike, so their budgets end at the same step with the same learning rates on the way."""

    def __init__(self, tick: float):
        self.tick, self.now = tick, 1000.0

    def monotonic(self) -> float:
        self.now += self.tick
        return self.now


class Recorder:
    """Patches jepa_world_model.train and jepa_configurator.train_critic to record, for the command being run, the
    flattened parameters after every training step (`steps`) and every checkpoint or critic written (`writes`), and
    gives the training a SteppingClock that runs at its own rate on each rank (only rank 0's may decide)."""

    def __init__(self):
        from jepa_configurator import train_critic
        from jepa_world_model import train
        self.steps, self.writes = [], []
        optimize, save_checkpoint = train.optimize, train.save_checkpoint
        critic_from_bags = train_critic.critic_from_bags

        def recording_optimize(*args, **kwargs):
            call = inspect.signature(optimize).bind(*args, **kwargs)
            parameters = [p for group in call.arguments['optimizer'].param_groups for p in group['params']]
            on_step = call.arguments['on_step']

            def record(step, terms):
                self.steps.append(torch.cat([p.detach().flatten() for p in parameters]).clone())
                on_step(step, terms)
            call.arguments['on_step'] = record
            return optimize(*call.args, **call.kwargs)

        def recording_save(model, path, *args, **kwargs):
            self.writes.append(str(path))
            return save_checkpoint(model, path, *args, **kwargs)

        def recording_critic(bags, out, *args, **kwargs):
            self.writes.append(str(out))
            return critic_from_bags(bags, out, *args, **kwargs)

        clock = SteppingClock(CLOCK_TICK * (1 + int(os.environ.get('RANK', '0'))))
        self.patches = [(train, 'optimize', recording_optimize), (train, 'save_checkpoint', recording_save),
                        (train_critic, 'critic_from_bags', recording_critic), (train, 'time', clock)]

    def install(self, setattr_=setattr) -> None:
        for module, name, value in self.patches:
            setattr_(module, name, value)

    def run(self, argv: list[str]) -> dict:
        """`jepa <argv>` from the initial weights a fixed seed gives, and what it did."""
        from jepa_bringup import cli
        self.steps, self.writes = [], []
        torch.manual_seed(0)    # the initial weights (DDP starts every rank from rank 0's)
        code = cli.main(argv)
        return {'code': code, 'steps': self.steps, 'writes': self.writes}


def worker(record: str, commands: str) -> int:
    recorder = Recorder()
    recorder.install()
    runs = [recorder.run(argv) for argv in json.loads(commands)]
    torch.save(runs, Path(record) / f'rank{os.environ["RANK"]}.pt')
    return max(run['code'] for run in runs)


def torchrun_jepa(commands: list[list[str]], record: Path, timeout: float = 240) -> list[list[dict]]:
    """The `jepa` command lines, one after the other, in one `torchrun --standalone --nproc_per_node 2` job: per rank,
    per command, what it did. (At most one of them may be a `jepa train`: gloo cannot start a second process group
    in the processes of a job after the first one ended.)"""
    job = subprocess.Popen([str(TORCHRUN), '--standalone', '--nproc_per_node', '2', __file__, str(record),
                            json.dumps(commands)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, 'OMP_NUM_THREADS': '1'}, start_new_session=True)
    try:
        _, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)      # the workers too
        _, err = job.communicate()
        pytest.fail(f'the torchrun job did not end in {timeout} s: {err[-4000:]}')
    assert job.returncode == 0, err[-4000:]
    return [torch.load(record / f'rank{rank}.pt', weights_only=True) for rank in (0, 1)]


def model_outputs(checkpoint: Path, ticks):
    """outputs(parameters): the embeddings of the ticks' frames and a prediction from each, in float64, by the model
    of `checkpoint`'s config with these flattened parameters. (Some parameters do not change the function: a
    convolution's bias before a GroupNorm of one channel per group, a keypoint map's bias before its spatial
    softmax. Their gradient is 0 but for rounding, which Adam's normalized step makes a step of +-lr in any run; in
    float32 their value still moves the rounding of the normalization.)"""
    from jepa_world_model.model import WorldModel, WorldModelConfig
    model = WorldModel(WorldModelConfig.from_dict(torch.load(checkpoint, weights_only=True)['config'])).double().eval()
    actions = torch.from_numpy(ticks.actions[:-1]).double()

    def outputs(parameters):
        torch.nn.utils.vector_to_parameters(parameters.double(), model.parameters())
        with torch.no_grad():
            latents = model.encoder(model.pixels(ticks.images).double())
            return torch.cat([latents, model.predict(latents[:-1], actions)])
    return outputs


@pytest.mark.skipif(not TORCHRUN.is_file(), reason=f'torchrun is not installed beside {sys.executable}')
def test_two_gloo_processes_train_like_one_process_on_the_global_batch(tmp_path, monkeypatch, one_torch_thread):
    from test_short_term_memory_bags import chain_memory
    from test_world_model_bags import write_bag
    from jepa_cost.cost import Critic
    from jepa_short_term_memory.bags import write_memory
    from jepa_world_model import dataset
    bag, cache, episodes = write_bag(tmp_path / 'play', n_ticks=60, seed=1), tmp_path / 'cache', tmp_path / 'episodes'
    ticks = dataset.load_bag(bag, cache_dir=cache)      # decoded once here; the ranks read the cache
    write_memory(episodes, chain_memory(episodes=12), 'chain@0')
    # A time budget of 0.12 s and a validation every 0.06 s on the stepping clock: a few steps, validations between.
    train = ['train', '--bag', str(bag), '--cache', str(cache), *SMALL, '--minutes', '0.002',
             '--set', 'val_every_s=0.06']
    critic = ['train-critic', '--bag', str(episodes), '--epochs', '30']
    job, one = tmp_path / 'job', tmp_path / 'one'
    (trained0, critic0), (trained1, critic1) = torchrun_jepa(
        [[*train, '--out', str(job / 'wm.pt')], [*critic, '--out', str(job / 'critic.pt')]], tmp_path)
    recorder = Recorder()
    recorder.install(monkeypatch.setattr)
    single = recorder.run([*train, '--out', str(one / 'wm.pt')])
    single_critic = recorder.run([*critic, '--out', str(one / 'critic.pt')])
    assert [run['code'] for run in (trained0, critic0, trained1, critic1, single, single_critic)] == [0] * 6

    # Every step: the ranks hold the same parameters, and the model one process has after that step on the same
    # global batch (the variance-covariance terms over both ranks' embeddings, the noise drawn for the whole batch).
    # Rank 0's clock ends the budget for both (rank 1's runs twice as fast) and sets their learning rates.
    steps = len(single['steps'])
    assert steps > 2 and len(trained0['steps']) == len(trained1['steps']) == steps
    assert not torch.equal(single['steps'][0], single['steps'][-1])
    outputs = model_outputs(one / 'wm.pt', ticks)
    for step, (alone, on_rank0, on_rank1) in enumerate(zip(single['steps'], trained0['steps'], trained1['steps']), 1):
        assert torch.equal(on_rank0, on_rank1), f'the ranks differ after step {step}'
        expected, got = outputs(alone), outputs(on_rank0)
        assert (got - expected).norm() <= 1e-5 * expected.norm(), \
            f'step {step}: 2 processes differ from one on the same global batch by {(got - expected).norm()}'

    # Rank 0 alone validates and writes (during the budget, the other rank waiting for it, and at its end), with the
    # job in the provenance.
    assert len(trained0['writes']) > 1 and set(trained0['writes']) == {str(job / 'wm.pt')}
    assert trained1['writes'] == [] and trained0['writes'] == [w.replace(str(one), str(job)) for w in single['writes']]
    in_job, alone = (torch.load(path, weights_only=True) for path in (job / 'wm.pt', one / 'wm.pt'))
    assert (in_job['provenance']['world_size'], in_job['provenance']['backend']) == (2, 'gloo')
    assert (alone['provenance']['world_size'], alone['provenance']['backend']) == (1, 'none')
    assert in_job['metrics']['steps'] == alone['metrics']['steps'] == steps
    assert in_job['metrics']['samples'] == alone['metrics']['samples'] == 4 * steps    # the global batch
    history = in_job['train_state']['history']
    assert history['loss'] == pytest.approx(alone['train_state']['history']['loss'], rel=1e-5)
    assert [v['step'] for v in in_job['train_state']['validations']] == \
        [v['step'] for v in alone['train_state']['validations']]
    assert in_job['metrics']['validation']['normalized_error'] == pytest.approx(
        alone['metrics']['validation']['normalized_error'], rel=1e-4)

    # The critic: fitted and written by rank 0, as by one process.
    assert critic0['writes'] == [str(job / 'critic.pt')] and critic1['writes'] == []
    fitted, expected = (Critic.load(path).state_dict() for path in (job / 'critic.pt', one / 'critic.pt'))
    assert all(torch.equal(fitted[name], expected[name]) for name in expected)


def test_what_a_job_cannot_do_is_refused_naming_it(tmp_path, monkeypatch, capsys):
    from jepa_world_model import train
    argv = ['--bag', str(tmp_path / 'play'), '--out', str(tmp_path / 'wm.pt')]
    monkeypatch.setenv('WORLD_SIZE', '2')
    assert train.main([*argv, '--device', 'cpu']) == 2
    assert 'WORLD_SIZE=2 without LOCAL_RANK: start distributed training with torchrun' in capsys.readouterr().err
    monkeypatch.setenv('LOCAL_RANK', '1')
    assert train.main([*argv, '--device', 'cuda:1']) == 2
    assert 'under torchrun each process takes the GPU of its LOCAL_RANK' in capsys.readouterr().err
    with pytest.raises(ValueError, match='batch_size 4 .the global batch. does not split evenly over 3 processes'):
        train.train_world_model(None, None, train.TrainConfig(batch_size=4), torch.device('cpu'), 1.0,
                                job=train.Job(rank=0, world_size=3, backend='gloo'))


if __name__ == '__main__':
    sys.exit(worker(*sys.argv[1:]))
