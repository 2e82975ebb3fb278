"""Task success of the agent through the full graph, against the issue's targets and against the baselines
measured in the same run (random actions; a scripted oracle with privileged sim state): `jepa eval` for reach
and push, every condition that applies to the task. Prints figures; asserts nothing. At 50 episodes on this
2-core CPU it takes hours (episodes run in real time). --quick: one reach episode of Mode-2 and one of the
oracle (a minute or two: the graph's start-up is most of it).

    .venv/bin/python bench/agent_tasks.py [--episodes 50] [--seed 0] [--task reach] [--json runs/bench_agent.json]
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

from jepa_bringup import evaluate
from jepa_bringup.episodes import AGENT_CONDITIONS

# The targets at the strict yardstick (success within 2.5 cm): reach 95 %, push 85 % (first milestone 50 %).
TARGETS = {'reach': 0.95, 'push': 0.85}
QUICK = ['--task', 'reach', '--episodes', '1', '--conditions', 'mode2,oracle']


def eval_argv(args) -> list[str]:
    """`jepa eval`'s command line for these arguments: through its CLI, not its internals, so that the bench
    follows the eval as it changes."""
    if args.quick:
        return [*QUICK, '--seed', str(args.seed)]
    return [arg for task in args.task or TARGETS for arg in ('--task', task)] + \
        ['--episodes', str(args.episodes), '--reference-episodes', str(min(args.episodes, 20)), '--seed', str(args.seed)]


def verdicts(tasks: dict) -> list[str]:
    """Per task and agent condition: its success rate against the target, the oracle's and random's."""
    lines = []
    for task, report in tasks.items():
        conditions = report['conditions']
        rate_of = {name: c['success_rate'] for name, c in conditions.items()}
        oracle, random = rate_of.get('oracle'), rate_of.get('random')
        for mode in (c for c in conditions if c in AGENT_CONDITIONS):
            rate, episodes = rate_of[mode], conditions[mode]['episodes']
            verdict = 'met' if rate >= TARGETS[task] else 'missed'
            relative = ('no oracle run' if oracle is None else
                        f'{rate / oracle:.2f}x the oracle' if oracle else 'oracle 0 %')
            floor = '' if random is None else f', random {random:.0%}'
            lines.append(f'{task} {mode}: {rate:.0%} of {episodes} (target {TARGETS[task]:.0%}: {verdict}); '
                         f'{relative}{floor}')
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--episodes', type=int, default=50)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--task', choices=sorted(TARGETS), action='append', help='default: both')
    parser.add_argument('--json', type=Path)
    parser.add_argument('--log-dir', type=Path, default=Path('runs/bench_agent'))
    parser.add_argument('--quick', action='store_true', help='one reach episode of mode2 and of the oracle')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='bench_agent_') as tmp:
        report = args.json or Path(tmp) / 'report.json'
        code = evaluate.main([*eval_argv(args), '--json', str(report), '--log-dir', str(args.log_dir)])
        if code:
            return code
        result = json.loads(report.read_text())
    print('\n'.join(verdicts(result['tasks'])))
    return 0


if __name__ == '__main__':
    sys.exit(main())
