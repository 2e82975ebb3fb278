"""The GPU path: perception's encoder, the Mode-2 planner at 256 / 1024 / 4096 samples and world-model training
steps, timed on cuda beside the same on the CPU, written to a results file with provenance.

Per device:
- encoder: perception's per-frame path (ImageEncoder.encode: one camera frame of the simulator's size, resized to
  the encoder's input, encoded, back to the host), ms p50 / p95 over single frames; and frames/s encoding
  batches of 256 (encode_batch);
- planner: one Mode-2 decision of the actor (Actor.act with the graph's reach settings, config/agent.yaml) at
  each --samples count, ms p50 / p95;
- training: world-model training steps (jepa_loss, AdamW and gradient clipping in `optimize`, the loop of `jepa
  train`) on random frames, at the default batch of 16 sequences and at 128, ms per step and windows/s.
The encoder and planner run on one CPU thread, as the nodes do (--cpu-threads); training on every core, as
`jepa train` does. The shipped checkpoint is the model throughout (its weights do not change the speed).

Writes gpu_path.json (every figure, the settings, and the provenance: commit, torch and CUDA versions, the CPU's
and GPU's names, the load) and gpu_path.txt (the table printed) to --out. Without CUDA the cuda column says why
and the CPU figures are still measured. --quick: tiny sizes, one timed call each (seconds: checks the script
runs; its figures mean little). The full run takes 2.5 minutes on the 2-core development machine under load; on a
GPU host its CPU half is the longer one (one thread for encoder and planner), well inside 8 minutes.

    .venv/bin/python bench/gpu_path.py [--quick] [--out runs/gpu_path]

On a GPU host without this project's install (bench/gpu_wheels.sh packs what its Python lacks), from the
checkout's root:

    mkdir -p /tmp/site && tar xzf runs/gpu_wheels/site.tar.gz -C /tmp/site
    PYTHONPATH=/tmp/site:/tmp/site/cmeel.prefix/lib/python3.12/site-packages python3 bench/gpu_path.py \
        --out DIR --commit SHA
"""
import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def use_bare_checkout() -> None:
    """Run from a checkout whose packages are not installed (a GPU host with only its own Python): their sources
    on sys.path."""
    try:
        import jepa_world_model  # noqa: F401
    except ImportError:
        sys.path[:0] = [str(p) for p in sorted((REPO / 'src').iterdir()) if (p / p.name / '__init__.py').is_file()]


use_bare_checkout()

import numpy as np  # noqa: E402
import torch  # noqa: E402


from jepa_actor.actor import Actor, ActorConfig  # noqa: E402
from jepa_bringup.provenance import machine_load, provenance  # noqa: E402
from jepa_bringup.agent_settings import graph_settings  # noqa: E402
from jepa_cost.cost import CostWeights  # noqa: E402
from jepa_common.kinematics import PANDA_HOME, ArmKinematics  # noqa: E402
from jepa_perception.encoder import ImageEncoder  # noqa: E402
from jepa_sim.camera import CameraConfig  # noqa: E402
from jepa_world_model.train import TrainConfig, jepa_loss, make_optimizer, optimize, set_threads  # noqa: E402

SAMPLES = (256, 1024, 4096)
TRAIN_BATCHES = (16, 128)
ENCODE_BATCH = 256


def reach_settings() -> tuple[ActorConfig, CostWeights]:
    """The actor's settings and the reach task's cost weights as the graph runs them, from this checkout's
    config/agent.yaml (a GPU host has no installed share directory)."""
    return graph_settings('reach', REPO / 'config' / 'agent.yaml')


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed_calls(fn, calls: int, device: torch.device) -> dict:
    """p50 / p95 wall milliseconds of `calls` calls of fn, after one warm-up call (allocations, kernel loading);
    on the CPU also the p50 of this thread's CPU time per call, which on a shared machine is what a free core
    would take (the encoder and the planner run on this one thread there)."""
    fn()
    sync(device)
    wall, cpu = [], []
    for _ in range(calls):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        sync(device)
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.thread_time() - start_cpu) * 1e3)
    figures = {'p50_ms': statistics.median(wall), 'p95_ms': float(np.percentile(wall, 95)), 'calls': calls}
    if device.type == 'cpu':
        figures['thread_cpu_p50_ms'] = statistics.median(cpu)
    return figures


def bench_encoder(encoder: ImageEncoder, frames: int, batches: int, batch: int) -> dict:
    device = encoder.device
    camera = CameraConfig()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (camera.height, camera.width, 3), dtype=np.uint8)
    size = encoder.image_size
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    per_frame = timed_calls(lambda: encoder.encode(frame), frames, device)
    per_batch = timed_calls(lambda: encoder.encode_batch(images), batches, device)
    return {'per_frame': {**per_frame, 'frame': [camera.height, camera.width], 'input': [size, size]},
            'batch': {'batch': batch, 'frames_per_s': batch / (per_batch['p50_ms'] / 1e3)}}


def bench_planner(model, samples: tuple[int, ...], plans: dict[int, int], device: torch.device) -> dict:
    config, weights = reach_settings()
    kinematics = ArmKinematics()
    rng = np.random.default_rng(0)
    z = rng.normal(size=model.latent_dim).astype(np.float32)
    goal = rng.normal(size=model.latent_dim).astype(np.float32)
    q = np.array(PANDA_HOME)
    results = {}
    for count in samples:
        actor = Actor(model, config.changed(samples=count), weights, kinematics)
        results[str(count)] = timed_calls(lambda: actor.act(z, goal, q, 'mode2'), plans[count], device)
    return results


def bench_training(trained, batches: tuple[int, ...], steps: int, device: torch.device) -> dict:
    """Steps of training a copy of the model `trained` (its architecture; fresh optimizer) per batch size."""
    results = {}
    for batch in batches:
        torch.manual_seed(0)
        model = copy.deepcopy(trained).to(device).train().requires_grad_(True)
        cfg = TrainConfig(batch_size=batch)
        length = cfg.sequence_length
        size = model.image_size
        images = torch.randint(0, 256, (batch, length, size, size, 3), dtype=torch.uint8, device=device)
        actions = (torch.rand(batch, length - 1, model.action_dim, device=device) * 2 - 1) * model.action_scale
        generator = torch.Generator().manual_seed(0)
        optimizer = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)

        def run(count: int) -> float:
            sync(device)
            start = time.perf_counter()
            optimize(optimizer, lambda step: jepa_loss(model, images, actions, cfg, generator), float('inf'), count,
                     cfg.grad_clip, progress=False)
            sync(device)
            return time.perf_counter() - start

        run(1)  # warm-up
        seconds = run(steps) / steps
        windows = batch * (length - cfg.horizon)
        results[str(batch)] = {'ms_per_step': seconds * 1e3, 'windows_per_s': windows / seconds, 'steps': steps,
                               'sequence_length': length}
    return results


def cuda_state() -> dict:
    """Whether torch can use a GPU here, and which; if not, why."""
    if torch.version.cuda is None:
        return {'available': False, 'reason': f'this torch ({torch.__version__}) is built without CUDA'}
    if not torch.cuda.is_available():
        return {'available': False, 'reason': f'torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU'}
    properties = torch.cuda.get_device_properties(0)
    state = {'available': True, 'name': properties.name, 'capability': f'{properties.major}.{properties.minor}',
             'memory_gib': round(properties.total_memory / 2 ** 30, 1), 'count': torch.cuda.device_count(),
             'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version()}
    try:
        state['driver'] = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                                         capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        state['driver'] = 'unknown (nvidia-smi did not answer)'
    return state


def measure(device: torch.device, sizes: dict, cpu_threads: int) -> dict:
    """Every figure on one device."""
    if device.type == 'cpu':
        torch.set_num_threads(cpu_threads)
    encoder = ImageEncoder('', str(device))
    figures = {'model_id': encoder.model_id}
    figures['encoder'] = bench_encoder(encoder, sizes['frames'], sizes['encode_batches'], sizes['encode_batch'])
    figures['planner'] = bench_planner(encoder.model, sizes['samples'], sizes['plans'], device)
    if device.type == 'cpu':
        set_threads(None)  # training takes every core, as jepa train does
        figures['training_threads'] = torch.get_num_threads()
    figures['training'] = bench_training(encoder.model, sizes['train_batches'], sizes['train_steps'], device)
    if device.type == 'cpu':
        torch.set_num_threads(cpu_threads)
    return figures


def table(results: dict, sizes: dict) -> list[str]:
    """The figures side by side: cpu, cuda, and the GPU's speed-up."""
    rows = [('encoder, one frame p50 (ms)', lambda r: r['encoder']['per_frame']['p50_ms'], False),
            ('encoder, one frame p95 (ms)', lambda r: r['encoder']['per_frame']['p95_ms'], False),
            (f'encoder, batches of {sizes["encode_batch"]} (frames/s)',
             lambda r: r['encoder']['batch']['frames_per_s'], True)]
    for count in sizes['samples']:
        rows.append((f'planner, {count} samples p50 (ms)', lambda r, c=str(count): r['planner'][c]['p50_ms'], False))
        rows.append((f'planner, {count} samples p95 (ms)', lambda r, c=str(count): r['planner'][c]['p95_ms'], False))
    for batch in sizes['train_batches']:
        rows.append((f'training, batch {batch} (ms/step)', lambda r, b=str(batch): r['training'][b]['ms_per_step'],
                     False))
        rows.append((f'training, batch {batch} (windows/s)', lambda r, b=str(batch): r['training'][b]['windows_per_s'],
                     True))
    cpu, cuda = results['cpu'], results.get('cuda')
    lines = [f'{"":44s} {"cpu":>12s} {"cuda":>12s} {"cuda speed-up":>14s}']
    for name, value, higher_is_better in rows:
        c = value(cpu)
        if cuda is None:
            lines.append(f'{name:44s} {c:12.2f} {"-":>12s} {"-":>14s}')
            continue
        g = value(cuda)
        lines.append(f'{name:44s} {c:12.2f} {g:12.2f} {(g / c if higher_is_better else c / g):13.1f}x')
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, default=Path('runs/gpu_path'),
                        help='folder for gpu_path.json and gpu_path.txt (default runs/gpu_path)')
    parser.add_argument('--samples', type=int, nargs='+', default=list(SAMPLES),
                        help=f'planner sample counts (default {" ".join(map(str, SAMPLES))})')
    parser.add_argument('--cpu-threads', type=int, default=1,
                        help='torch threads of the CPU encoder and planner (default 1, as the nodes run)')
    parser.add_argument('--commit', default='',
                        help='the commit this checkout is, recorded where it is not a git checkout (a copied tree)')
    parser.add_argument('--quick', action='store_true', help='tiny sizes, one timed call each')
    args = parser.parse_args(argv)
    if any(s < 1 for s in args.samples):
        parser.error(f'--samples must be >= 1, got {args.samples}')
    if args.cpu_threads < 1:
        parser.error(f'--cpu-threads must be >= 1, got {args.cpu_threads}')
    if args.quick:
        samples = tuple(args.samples) if args.samples != list(SAMPLES) else (16, 64)
        sizes = {'frames': 2, 'encode_batches': 1, 'encode_batch': 8, 'samples': samples,
                 'plans': {s: 1 for s in samples}, 'train_batches': (2,), 'train_steps': 1}
    else:
        samples = tuple(args.samples)
        # Fewer plans where each takes long on a CPU thread: about 10 s per count there.
        sizes = {'frames': 200, 'encode_batches': 10, 'encode_batch': ENCODE_BATCH, 'samples': samples,
                 'plans': {s: max(5, min(30, 30 * 256 // s)) for s in samples}, 'train_batches': TRAIN_BATCHES,
                 'train_steps': 10}

    record = provenance([sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv])
    if args.commit:
        record['commit_given'] = args.commit
    cuda = cuda_state()
    record['devices'] = {'cpu': record['machine']['cpu'], 'cuda': cuda}
    record['torch'] = {'version': torch.__version__, 'cuda': torch.version.cuda}
    record['settings'] = {'quick': args.quick, 'cpu_threads': args.cpu_threads,
                          **{k: (list(v) if isinstance(v, tuple) else v) for k, v in sizes.items() if k != 'plans'},
                          'plans': {str(k): v for k, v in sizes['plans'].items()}}
    config, _ = reach_settings()
    record['settings']['planner'] = {'planner': config.planner, 'horizon': config.horizon,
                                     'iterations': config.iterations, 'grad_steps': config.grad_steps}
    results = {'cpu': measure(torch.device('cpu'), sizes, args.cpu_threads)}
    if cuda['available']:
        results['cuda'] = measure(torch.device('cuda'), sizes, args.cpu_threads)
    record['load_end'] = machine_load()

    commit = record['git']['commit'] if record['git']['commit'] != 'unknown' else args.commit or 'unknown'
    head = [f'gpu path: commit {commit}; torch {torch.__version__}; cpu {record["machine"]["cpu"]} '
            f'({record["machine"]["cores"]} cores; encoder and planner on {args.cpu_threads} thread(s), training on '
            f'{results["cpu"]["training_threads"]}); load {record["load_start"]["loadavg_1_5_15"][0]:.2f} -> '
            f'{record["load_end"]["loadavg_1_5_15"][0]:.2f}',
            f'cuda: {cuda["name"]} (driver {cuda["driver"]}, CUDA {cuda["cuda"]})' if cuda['available'] else
            f'cuda: unavailable: {cuda["reason"]}',
            f'model {results["cpu"]["model_id"]}; planner {config.planner}, horizon {config.horizon}, '
            f'{config.iterations} iterations + {config.grad_steps} gradient steps (reach settings); '
            f'{"quick: tiny sizes, one timed call each" if args.quick else "full sizes"}']
    cpu = results['cpu']
    thread_cpu = [f'encoder {cpu["encoder"]["per_frame"]["thread_cpu_p50_ms"]:.2f} ms per frame'] + \
        [f'planner {s} samples {cpu["planner"][str(s)]["thread_cpu_p50_ms"]:.1f} ms' for s in sizes['samples']]
    text = '\n'.join(head + table(results, sizes) + ['CPU time of the cpu calls, p50 (what a free core takes; the '
                                                     f'table is wall time): {", ".join(thread_cpu)}']) + '\n'
    print(text, end='')
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'gpu_path.json').write_text(json.dumps({'provenance': record, 'results': results}, indent=1))
    (args.out / 'gpu_path.txt').write_text(text)
    print(f'written: {args.out / "gpu_path.json"}, {args.out / "gpu_path.txt"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
