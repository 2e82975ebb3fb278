"""How the higher level's terminal cost weighs the cube against the hand: over random pairs of states of one play
episode (0.1-10 s apart; privileged cube and hand positions, diagnostics only), the mean isotropic latent distance
and controllable energy by how far the hand moved with the cube still (< 3 mm), and by how far the cube moved with
the hand within 1.5 cm. A quadratic fit misleads here (the latent distance is not quadratic in the hand's move),
hence bins."""
import numpy as np
import torch

from jepa_cost.cost import EnergyMetric
from jepa_world_model.model import default_checkpoint_path, load_checkpoint

model = load_checkpoint(default_checkpoint_path())
metric = EnergyMetric.of(model)
play = dict(np.load('data/play_contact4.npz'))
rng = np.random.default_rng(0)
n = len(play['z'])
i = rng.integers(n - 100, size=400000)
j = i + rng.integers(1, 100, size=len(i))
keep = play['ep'][i] == play['ep'][j]
i, j = i[keep], j[keep]
diff = torch.as_tensor(play['z'][i] - play['z'][j], dtype=torch.float32)
costs = {'isotropic': metric.isotropic(diff).numpy(), 'controllable': metric.controllable(diff, 0.03).numpy()}
cube_cm = 100 * np.linalg.norm(play['cube'][i, :2] - play['cube'][j, :2], axis=1)
hand_cm = 100 * np.linalg.norm(play['ee'][i] - play['ee'][j], axis=1)
bins = (0, 1, 2, 3, 5, 8, 12)
for name, cost in costs.items():
    for label, mask, moved in (('hand moved (cm), cube still', cube_cm < 0.3, hand_cm),
                               ('cube moved (cm), hand within 1.5 cm', hand_cm < 1.5, cube_cm)):
        cells = []
        for lo in bins:
            m = mask & (moved >= lo) & (moved < lo + 1)
            if m.sum() > 5:
                cells.append(f'{lo}-{lo + 1}: {cost[m].mean():.3f} ({m.sum()})')
        print(f'{name:12s} {label:36s} ' + '  '.join(cells))
