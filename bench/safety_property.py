"""The safety gate's property (tests/test_safety_property.py) at scale: generated gate parameters x measured
states x commands, and every escape of the joint limits, the workspace box or the speed limits counted (the
test stops at the first). Prints the counts and the time; exits 1 on any escape.

    .venv/bin/python bench/safety_property.py [--cases 100000] [--quick] [--seed 0]
"""
import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))
from test_safety_property import cases, outcome, run_case  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', type=int, default=100_000)
    parser.add_argument('--quick', action='store_true', help='1,000 cases')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    count = 1000 if args.quick else args.cases

    outcomes, escapes = Counter(), []

    # Generation only: nothing fails, so there is nothing to shrink, and no example database is written.
    @seed(args.seed)
    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases())
    def run(case):
        gate, decision, problems = run_case(case)
        outcomes[outcome(gate, decision)] += 1
        escapes.extend(problems)

    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    total = sum(outcomes.values())
    print(f'{total} cases in {elapsed:.1f} s ({elapsed / total * 1e3:.2f} ms each): '
          + ', '.join(f'{k} {v}' for k, v in sorted(outcomes.items())))
    print(f'escapes: {len(escapes)}')
    for problem in escapes[:20]:
        print(f'  {problem}')
    return 1 if escapes else 0


if __name__ == '__main__':
    sys.exit(main())
