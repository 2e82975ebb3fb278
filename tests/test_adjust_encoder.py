"""`jepa adjust-encoder` on real rosbag2 play bags: the encoder learns to read where the joints say the hand is,
everything after it stays as trained, and nothing is written unless the held-out episodes read better."""
import json

import numpy as np
import pytest
import torch

from jepa_configurator import adjust_encoder
from jepa_configurator.adjust_encoder import EncoderTuning, Episode, fine_tune_encoder
from jepa_configurator.adjust_world_model import AdjustmentError
from jepa_world_model.model import WorldModel, WorldModelConfig, load_checkpoint, read_checkpoint, save_checkpoint
from test_world_model_bags import write_bag

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def small_model(path) -> WorldModel:
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(image_size=32, encoder_channels=(8, 8, 8), keypoints=0, latent_dim=16,
                                        predictor_hidden=32))
    save_checkpoint(model, path, provenance={'commands': ['made by the test']})
    return model


def play_bags(tmp_path, count=5):
    """Play bags, oldest first (the last is held out to judge)."""
    return [str(write_bag(tmp_path / f'play{seed}', n_ticks=80, seed=seed, poses=False)) for seed in range(count)]


def test_the_encoder_learns_to_read_the_hand_and_nothing_else_changes(tmp_path, capsys):
    checkpoint = tmp_path / 'model.pt'
    before = small_model(checkpoint)
    bags = play_bags(tmp_path)
    out = tmp_path / 'adjusted.pt'
    # This untrained predictor predicts "nothing changes": any encoder that moves with the hand breaks it (the
    # refusal test below), so its guard is opened here.
    argv = ['--checkpoint', str(checkpoint), '--out', str(out), '--steps', '300', '--lr', '3e-3',
            '--max-prediction-ratio', '1000']
    assert adjust_encoder.main([arg for bag in bags for arg in ('--bag', bag)] + argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary['kind'] == 'encoder' and summary['episodes'] == 3 and summary['held_out_episodes'] == 2
    assert summary['held_out_error_after'] < 0.9 * summary['held_out_error_before']
    adjusted = load_checkpoint(out)
    assert adjusted.model_id == summary['model_id'] != before.model_id
    changed = {name for (name, old), new in zip(before.state_dict().items(), adjusted.state_dict().values())
               if not torch.equal(old, new)}
    assert changed and all(name.startswith('encoder.') for name in changed), sorted(changed)
    # A second run would overwrite what the first learned: refused.
    with pytest.raises(SystemExit):
        adjust_encoder.main([arg for bag in bags for arg in ('--bag', bag)] + argv)
    assert 'is never overwritten' in capsys.readouterr().err and load_checkpoint(out).model_id == adjusted.model_id
    provenance = read_checkpoint(out)[0]['provenance']
    assert provenance['commands'] == ['made by the test']
    assert provenance['adjustments'][-1]['adjusted_from'] == before.model_id
    assert provenance['adjustments'][-1]['bags_sha256'] and len(provenance['adjustments'][-1]['bags']) == 5


def test_an_adjustment_that_does_not_read_better_writes_nothing(tmp_path, capsys):
    checkpoint = tmp_path / 'model.pt'
    small_model(checkpoint)
    bags = play_bags(tmp_path)
    out = tmp_path / 'adjusted.pt'
    given = [arg for bag in bags for arg in ('--bag', bag)] + ['--checkpoint', str(checkpoint), '--out', str(out)]
    # Reads the hand better, but the predictor in service would no longer predict its latents.
    assert adjust_encoder.main(given + ['--steps', '300', '--lr', '3e-3']) == 1
    assert 'reads the hand better but breaks the predictor' in capsys.readouterr().err
    assert not out.exists()
    # Reads it no better.
    assert adjust_encoder.main(given + ['--steps', '1', '--lr', '1e-9', '--max-prediction-ratio', '1000']) == 1
    assert 'did not predict the held-out transitions better' in capsys.readouterr().err
    assert not out.exists()
    # One bag: nothing to judge an adjustment on.
    assert adjust_encoder.main(['--bag', bags[0], '--checkpoint', str(checkpoint), '--out', str(out)]) == 1
    assert 'one to learn from and one to judge on' in capsys.readouterr().err
    assert not out.exists()


def test_fine_tuning_leaves_the_model_in_service_as_it_was(tmp_path):
    model = small_model(tmp_path / 'model.pt')
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    episodes = [Episode(rng.integers(0, 255, (41, 32, 32, 3), dtype=np.uint8),
                        rng.normal(0, 0.01, (40, 4)).astype(np.float32), rng.normal(0.5, 0.1, (41, 3)))
                for _ in range(4)]
    with pytest.raises(AdjustmentError, match='held-out'):  # noise frames: nothing to read, after 20 steps of trying
        fine_tune_encoder(model, episodes, EncoderTuning(steps=20))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match='holdout'):
        EncoderTuning(holdout=1.0)
