"""Markdown tables of adapt_in_process.py's JSON reports: per-episode outcomes of every arm and the adjustments.

    .venv/bin/python research/adaptation/summarize.py camera_moved.json [camera_moved_effector_map.json ...]
"""
import json
import sys


def main() -> int:
    for path in sys.argv[1:]:
        report = json.load(open(path))
        arms = [a for a in ('nominal', 'off', 'on') if a in report]
        print(f'### {path}: perturbation {report["perturbation"]["names"]}, tuning {report["tuning"]}, '
              f'effector map refit {report["args"].get("effector_map", "False")}\n')
        for arm in arms:
            r = report[arm]
            print(f'- {arm}: {r["success_rate"]:.0%} ({sum(c == "1" for c in r["successes"])}/{len(r["successes"])}), '
                  f'last 10 {r["last10_success_rate"]:.0%}; per episode {r["successes"]}; surprising steps '
                  f'{r.get("surprising_steps", "n/a")} of {r.get("observed_steps", "n/a")}, monitor fired '
                  f'{r.get("surprise_fired", "n/a")}')
        perturbed = [a for a in ('off', 'on') if a in report]
        if perturbed:
            # Later runs also record the start distance the effector map read and its gap to the measured steps.
            read = 'map_gap_cm' in report[perturbed[0]]['episodes'][0]
            extra = ' | {a} start read / true (cm) | {a} map gap / measured step (cm)' if read else ''
            print('\n| seed | ' + ' | '.join(f'{a} final (cm) | {a} pred. error' + extra.format(a=a)
                                            for a in perturbed) + ' |')
            print('|---|' + ('---|---|' + '---|---|' * read) * len(perturbed))
            for rows in zip(*(report[a]['episodes'] for a in perturbed)):
                print(f'| {rows[0]["seed"]} | ' + ' | '.join(
                    f'{100 * e["final_distance_m"]:.1f} {"ok" if e["success"] else "MISS"} | '
                    f'{e["prediction_error"]:.4f}' + (
                        f' | {100 * e["start_distance_read_m"]:.1f} / {100 * e["start_distance_m"]:.1f} | '
                        f'{e["map_gap_cm"]:.2f} / {e["measured_step_cm"]:.2f}' if read else '') for e in rows) + ' |')
        for arm in perturbed:
            for a in report[arm]['adjustments']:
                parts = []
                # The first runs' records hold the predictor's figures at the top level.
                records = {k: a[k] for k in ('predictor', 'effector_map') if k in a} or {'predictor': a}
                for part, p in records.items():
                    parts.append(f'{part} {"KEPT" if p["kept"] else "refused"}' + (
                        f' (held-out error {p["held_out_error_before"]:.3g} -> {p["held_out_error_after"]:.3g}, '
                        f'{p["transitions"]} + {p["held_out"]} held out)' if 'held_out_error_before' in p
                        else f' ({p["why"][:160]})'))
                print(f'- {arm} adjustment after episode {a["after_episode"]} ({a["seconds"]} s): {"; ".join(parts)}')
        print()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
