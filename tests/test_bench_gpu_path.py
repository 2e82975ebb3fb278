"""bench/gpu_path.py, the GPU path's prepared script: its --quick run on this machine writes the results file with
every figure and its provenance, and says why there is no cuda column where torch has no GPU; the graph settings
it reads without the simulator's imports are the ones the graph runs."""
import json
import math
import subprocess
import sys

import torch

from rosharness import REPO

SCRIPT = REPO / 'bench' / 'gpu_path.py'


def test_quick_run_writes_every_figure_with_provenance(tmp_path):
    out = tmp_path / 'out'
    result = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--out', str(out), '--commit', 'abc123'],
                            cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f'{result.stdout}\n--- stderr\n{result.stderr[-3000:]}'
    record = json.loads((out / 'gpu_path.json').read_text())
    text = (out / 'gpu_path.txt').read_text()
    assert text in result.stdout
    provenance, results = record['provenance'], record['results']
    assert provenance['git']['commit'] not in ('', None) and provenance['commit_given'] == 'abc123'
    assert provenance['torch']['version'] == torch.__version__
    assert provenance['devices']['cpu'] == provenance['machine']['cpu']
    cuda = provenance['devices']['cuda']
    if torch.cuda.is_available():
        assert cuda['available'] and cuda['name'] and 'cuda' in results
    else:
        assert cuda['available'] is False and ('without CUDA' in cuda['reason'] or 'sees no GPU' in cuda['reason'])
        assert set(results) == {'cpu'}
        assert f'cuda: unavailable: {cuda["reason"]}' in text
    samples = provenance['settings']['samples']
    cpu = results['cpu']
    figures = [cpu['encoder']['per_frame']['p50_ms'], cpu['encoder']['per_frame']['p95_ms'],
               cpu['encoder']['batch']['frames_per_s'],
               *(cpu['planner'][str(s)][k] for s in samples for k in ('p50_ms', 'p95_ms')),
               *(v for batch in cpu['training'].values() for v in (batch['ms_per_step'], batch['windows_per_s']))]
    assert all(math.isfinite(f) and f > 0 for f in figures), cpu
    assert set(cpu['planner']) == {str(s) for s in samples}
    assert all(f'planner, {s} samples p50 (ms)' in text for s in samples)


def test_a_bad_size_is_refused_naming_the_flag(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--out', str(tmp_path), '--samples', '256', '0'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and '--samples must be >= 1' in result.stderr, result.stderr
    assert not (tmp_path / 'gpu_path.json').exists()


def test_the_settings_it_reads_are_the_graphs_reach_settings():
    sys.path.insert(0, str(REPO / 'bench'))
    try:
        from gpu_path import reach_settings
    finally:
        sys.path.remove(str(REPO / 'bench'))
    from jepa_bringup.agent_settings import graph_settings
    assert reach_settings() == graph_settings('reach')   # the checkout's agent.yaml is the installed one
