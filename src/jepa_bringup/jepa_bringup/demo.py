"""`make demo`: the whole stack, headless, on the shipped world-model checkpoint.

1. The arm: `jepa launch sim_arm` (simulator + safety gate), then a contract-only client (arm_check) drives it
   through the gate and measures the rates and tracking error.
2. The agent: `jepa eval` brings up the full graph and runs a few seeded reach and push episodes of every
   condition (the agent's Mode-2 and Mode-1, and the scripted_skill, oracle and random references), prints the
   success table and writes a video of one episode per task with the planned end-effector path drawn over the
   camera image.
"""
import argparse
import json
import sys
import time
from pathlib import Path

from jepa_bringup.episodes import AGENT_CONDITIONS, BASELINES
from jepa_bringup.evaluate import graph_camera, run, start_graph, stop_graph, success_table


def arm_part(out_dir: Path) -> dict:
    from jepa_sim.arm_check import print_report, check_arm
    graph = start_graph('sim_arm', [], out_dir / 'sim_arm.log')
    try:
        result = check_arm(timeout=90.0)
    finally:
        stop_graph(graph)
    print_report(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='jepa demo', description=__doc__.split('\n')[0])
    parser.add_argument('--episodes', type=int, default=3, help='episodes per task and condition')
    parser.add_argument('--seed', type=int, default=1000, help='first episode seed (not used in training)')
    parser.add_argument('--out', type=Path, default=Path('runs/demo'))
    parser.add_argument('launch_args', nargs='*', help='graph arguments name:=value (device:=cuda, ...)')
    args = parser.parse_args(argv)
    try:
        camera = graph_camera(args.launch_args)
    except ValueError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    print('== 1/2  the simulated arm behind the safety gate (rates, tracking error)', flush=True)
    arm = arm_part(args.out)

    print(f'\n== 2/2  the agent: {args.episodes} seeded episodes per task and condition', flush=True)
    result = run(['reach', 'push'], args.episodes, args.seed, [*AGENT_CONDITIONS, *BASELINES],
                 args.launch_args, args.out / 'episode.mp4', args.out, camera,
                 command=['jepa_bringup.demo', *(sys.argv[1:] if argv is None else argv)],
                 log=lambda s: print(s, flush=True))
    print('\n' + success_table(result))
    summary = {'arm': arm, 'eval': result, 'wall_time_s': time.monotonic() - started}
    (args.out / 'demo.json').write_text(json.dumps(summary, indent=2))
    print(f'\nwrote {args.out / "demo.json"}, videos in {args.out}/ ({summary["wall_time_s"]:.0f} s)')
    return 0 if arm['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
