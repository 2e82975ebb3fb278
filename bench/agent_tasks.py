"""Task success of the agent through the full graph, against the issue's targets and against the baselines
measured in the same run (random actions; a scripted oracle with privileged sim state): `jepa eval` for reach
and push, Mode-2 and Mode-1. Prints figures; asserts nothing. At 50 episodes on this 2-core CPU it takes about
25 min for reach and 45 min for push (episodes run in real time).

    .venv/bin/python bench/agent_tasks.py [--episodes 50] [--seed 0] [--task reach] [--json runs/bench_agent.json]
"""
import argparse
import json
import sys
from pathlib import Path

from jepa_bringup.episodes import AGENT_CONDITIONS, BASELINES
from jepa_bringup.evaluate import run, success_table

TARGETS = {'reach': 0.95, 'push': 0.70}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--episodes', type=int, default=50)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--task', choices=sorted(TARGETS), action='append', help='default: both')
    parser.add_argument('--json', type=Path)
    parser.add_argument('--log-dir', type=Path, default=Path('runs/bench_agent'))
    args = parser.parse_args()
    reports = run(args.task or list(TARGETS), args.episodes, args.seed, [*AGENT_CONDITIONS, *BASELINES], [], None,
                  args.log_dir)
    print(success_table(reports))
    for task, report in reports.items():
        oracle = report['baselines']['oracle']['success_rate']
        random = report['baselines']['random']['success_rate']
        for mode, rate in (('mode2', report['success_rate']), ('mode1', report['mode1']['success_rate'])):
            verdict = 'met' if rate >= TARGETS[task] else 'missed'
            relative = f'{rate / oracle:.2f}x the oracle' if oracle else 'oracle 0 %'
            print(f'{task} {mode}: {rate:.0%} of {args.episodes} (target {TARGETS[task]:.0%}: {verdict}); {relative}, '
                  f'random {random:.0%}')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
