"""Summary of diag_library.py's probes: per situation (all, `ahead`, `short`), per plan, the mean predicted and real
terminal cost, the exploitation gap (real - predicted), the cube's progress towards the goal in the 3 s (cm,
positive = nearer), and pairwise: how often the library pick is really cheaper / moves the cube nearer than the
shipped pick, and how often the predictor orders the two as the real cost does.
    summarize_diag_library.py results/diag_library_5000.json [...]"""
import json
import sys

import numpy as np

rows = [r for path in sys.argv[1:] for r in json.load(open(path))['rows']]
PLANS = ('shipped', 'library', 'still', 'oracle')
for label, subset in (('all', rows), ('ahead (hand between cube and goal)', [r for r in rows if 'ahead' in r['tags']]),
                      ('short (cube 2.5-8 cm from goal)', [r for r in rows if 'short' in r['tags']]),
                      ('far (cube >= 8 cm from goal, hand not ahead)',
                       [r for r in rows if r['cube_to_goal'] >= 0.08 and 'ahead' not in r['tags']])):
    if not subset:
        continue
    print(f'\n{label}: {len(subset)} states')
    print(f'{"plan":8s} {"predicted":>9s} {"real":>7s} {"gap":>7s} {"progress cm":>11s} {"nearer >1cm":>11s} '
          f'{"farther >1cm":>12s}')
    for p in PLANS:
        pred = np.array([r[p]['predicted'] for r in subset])
        real = np.array([r[p]['real'] for r in subset])
        prog = np.array([r['cube_to_goal'] - r[p]['cube_to_goal_after'] for r in subset]) * 100
        print(f'{p:8s} {np.median(pred):9.3f} {np.median(real):7.3f} {np.median(real - pred):7.3f} '
              f'{prog.mean():11.2f} {int((prog > 1).sum()):11d} {int((prog < -1).sum()):12d}   (medians; progress mean)')
    lib_real = np.array([r['library']['real'] < r['shipped']['real'] for r in subset])
    lib_prog = np.array([r['library']['cube_to_goal_after'] < r['shipped']['cube_to_goal_after'] - 0.005
                         for r in subset])
    ship_prog = np.array([r['shipped']['cube_to_goal_after'] < r['library']['cube_to_goal_after'] - 0.005
                          for r in subset])
    agree = np.array([(r['library']['predicted'] < r['shipped']['predicted'])
                      == (r['library']['real'] < r['shipped']['real']) for r in subset])
    oracle_first = np.array([r['oracle']['predicted'] < min(r['shipped']['predicted'], r['library']['predicted'])
                             for r in subset])
    oracle_real_first = np.array([r['oracle']['real'] < min(r['shipped']['real'], r['library']['real'])
                                  for r in subset])
    print(f'library really cheaper than shipped: {lib_real.sum()}/{len(subset)}; library leaves the cube >0.5 cm '
          f'nearer: {lib_prog.sum()}, shipped nearer: {ship_prog.sum()}; predictor orders the two as the real cost: '
          f'{agree.sum()}/{len(subset)}; oracle predicted cheapest {oracle_first.sum()}, really cheapest '
          f'{oracle_real_first.sum()}')
