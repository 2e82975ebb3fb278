"""Every bench script runs in its --quick mode and prints its result lines, so that none rots unnoticed. Scripts
are found by glob: a new one is covered as soon as it exists (with its result lines named in RESULT_LINES, it
is also held to them)."""
import re
import subprocess
import sys

import pytest

from rosharness import REPO, next_domain_id, ros_env

BENCH = REPO / 'bench'
# What each script's results look like: lines with its figures and their ratios to the baselines of the run.
RESULT_LINES = {
    'adaptation_guard.py': [r'burst of 50 noise frames: guarded: refused 50 of them',
                            r'adjustments with the guard: \d+ over [\d.]+ min nominal and 4 bursts of 50 corrupt '
                            r'frames \(target 0: (met|MISSED)\); unguarded: \d+'],
    'bag_fuzz.py': [r'bag fuzz: \d+ damaged copies of \d+ bags in [\d.]+ s: 0 broken rules'],
    'agent_tasks.py': [r'reach mode2: \d+% of 1 \(target 95%: (met|missed)\); (\d+\.\d\dx the oracle|oracle 0 %)'],
    'gpu_path.py': [r'planner, \d+ samples p50 \(ms\) +[\d.]+', r'cuda: '],
    'loader_memory.py': [r'loading \+ sampling: peak RSS \d+ MiB', r'loader: \d+ windows/s from disk'],
    'planner_rate.py': [r'mode2 default .* cpu p50 +[\d.]+ p95 +[\d.]+ ms = +[\d.]+ Hz on a free core',
                        r'default vs sampling-only: [\d.]+x the time; vs batch-1 loop: \d+x faster',
                        r'target >= 10 Hz replanning on a free core: (met|MISSED)',
                        r'push: higher level alone .* cpu p50 +[\d.]+',
                        r'push, both levels: target >= 10 Hz on a free core: (met|MISSED)',
                        r'cpu peak [\d.]+ GFLOP/s float32: best of 5 torch.mm \d+ x \d+ \(BLAS, the practical peak\)',
                        r'mode2 default .* [\d.]+ GFLOP per decision = +[\d.]+ GFLOP/s, +[\d.]+% of the peak; '
                        r'the peak allows +\d+ Hz',
                        r'push: both levels .* [\d.]+ GFLOP per decision = +[\d.]+ GFLOP/s, +[\d.]+% of the peak'],
    'push_diagnosis.py': [r'cube read-out error [\d.]+ cm on \d+ new scenes \(predicting the mean: [\d.]+ cm\)',
                          r'the push skill \(graph settings, shipped read-out; seeds 0-0\): [01] of 1 within',
                          r'the effector map reading real hand steps'],
    'record_throughput.py': [r'writer baseline \(BagRecorder in-process, no DDS\): +[\d.]+ MB/s',
                             r'nominal 30 Hz .*\n +images \d+/\d+ recorded',
                             r'ratios: recorder/DDS-baseline \S+ \(MB/s\) \S+ \(msg/s\); recorder/writer-baseline'],
    'safety_property.py': [r'\d+ cases in [\d.]+ s \([\d.]+ ms each\)', r'escapes: 0'],
    'world_model_throughput.py': [r'training: +[\d.]+ windows/s',
                                  r'encoder: [\d.]+ ms per image',
                                  r'rollout batch +\d+ horizon 5: +\d+ steps/s \( *[\d.]+x batch 1\).*'
                                  r'\(predictor at [\d.]+x its speed\)'],
}
# The ones that start node processes over real DDS: the graph's eval, and the recorder against a publisher.
INTEGRATION = {'agent_tasks.py', 'record_throughput.py'}


# Scripts whose measuring code another test already runs end to end (the suite's time is budgeted).
RUN_ELSEWHERE = {'two_host_latency.py': 'tests/test_two_hosts.py runs its run_phase across the two namespaces'}


def scripts():
    return [pytest.param(path, id=path.name, marks=[pytest.mark.integration] if path.name in INTEGRATION else [])
            for path in sorted(BENCH.glob('*.py')) if path.name not in RUN_ELSEWHERE]


@pytest.mark.parametrize('script', scripts())
def test_bench_script_runs_quick_and_prints_its_results(script, tmp_path):
    # In a scratch directory (what a bench writes under runs/ stays out of the repository), on a ROS domain of
    # its own.
    result = subprocess.run([sys.executable, str(script), '--quick'], cwd=tmp_path, env=ros_env(next_domain_id()),
                            capture_output=True, text=True, timeout=280)
    output = f'{result.stdout}\n--- stderr\n{result.stderr[-3000:]}'
    assert result.returncode == 0, output
    assert result.stdout.strip(), output
    for pattern in RESULT_LINES.get(script.name, []):
        assert re.search(pattern, result.stdout), f'no line matches {pattern!r}:\n{output}'
