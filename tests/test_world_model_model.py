"""World model core: shapes, differentiable rollout, bounded latent variable, anti-collapse regularizer, the
slowness term keeping a small static object in the latent, checkpoint save/load and mismatch errors."""
import numpy as np
import pytest
import torch

from jepa_world_model.model import (CheckpointError, WorldModel, WorldModelConfig, kl_to_standard_normal,
                                    load_checkpoint, save_checkpoint)
from jepa_world_model.eval_model import ridge_probe
from jepa_world_model.train import TrainConfig, jepa_loss, parse_overrides, split_overrides, variance_covariance


pytestmark = pytest.mark.usefixtures('one_torch_thread')

SMALL = dict(latent_dim=16, encoder_channels=(8, 8, 16, 16), predictor_hidden=64, z_dim=2)


def small_model(**overrides):
    torch.manual_seed(0)
    return WorldModel(WorldModelConfig(**{**SMALL, **overrides})).eval()


def images(batch, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def test_shapes_and_contract():
    model = small_model()
    assert (model.latent_dim, model.action_dim, model.image_size) == (16, 4, 64)
    with torch.no_grad():
        z = model.encode(images(3))
        assert z.shape == (3, 16)
        # Other camera sizes are resized the way the datasets resize.
        assert model.encode(images(2, size=96)).shape == (2, 16)
        nxt = model.predict(z, torch.zeros(3, 4))
        assert nxt.shape == (3, 16)
        torch.testing.assert_close(nxt, model.predict(z, torch.zeros(3, 4), torch.zeros(3, 2)))
        path = model.rollout(z, torch.zeros(3, 7, 4))
        assert path.shape == (3, 7, 16)
        torch.testing.assert_close(path[:, 0], nxt)
    with pytest.raises(ValueError, match='actions'):
        model.predict(z, torch.zeros(3, 3))
    with pytest.raises(ValueError, match='uint8'):
        model.encode(images(2).astype(np.float32))
    with pytest.raises(ValueError, match='proprio'):
        small_model(use_proprio=True).encode(images(2))
    with torch.no_grad():
        assert small_model(use_proprio=True).encode(images(2), proprio=np.zeros((2, 9))).shape == (2, 16)


def test_rollout_is_differentiable_in_actions_and_state():
    model = small_model()
    z0 = model.encode(images(4)).detach().requires_grad_(True)
    actions = torch.zeros(4, 5, 4, requires_grad=True)
    model.rollout(z0, actions)[:, -1].pow(2).sum().backward()
    assert torch.isfinite(actions.grad).all() and actions.grad[:, :, :3].abs().sum() > 0
    assert actions.grad[:, 0].abs().sum() > 0      # the first action reaches the last state
    assert torch.isfinite(z0.grad).all() and z0.grad.abs().sum() > 0


def fit_latent_variable(z_dim, kl_weight, steps=400, dim=8, noise=0.5):
    """Toy dynamics s' = s + B a + u with u ~ N(0, noise^2 I) unpredictable in every dimension; train the
    predictor and the posterior over z; return (error with posterior-mean z, error with z = 0, mean KL)."""
    torch.manual_seed(1)
    model = WorldModel(WorldModelConfig(latent_dim=dim, z_dim=z_dim, predictor_hidden=64, encoder_channels=(8,),
                                        keypoints=0, image_size=8))
    mixing = torch.randn(4, dim) * 0.3
    optimizer = torch.optim.Adam([*model.predictor.parameters(), *model.posterior.parameters()], lr=3e-3)

    def batch(n):
        s = torch.randn(n, dim)
        a = torch.rand(n, 4) * 2 - 1
        return s, a * model.action_scale, s + a @ mixing + noise * torch.randn(n, dim)

    for _ in range(steps):
        s, a, s_next = batch(256)
        mean, logvar = model.infer_latent_var(s, s_next)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        loss = (model.predict(s, a, z) - s_next).pow(2).mean() + kl_weight * kl_to_standard_normal(mean, logvar).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        s, a, s_next = batch(4096)
        mean, logvar = model.infer_latent_var(s, s_next)
        with_z = (model.predict(s, a, mean) - s_next).pow(2).mean().item()
        without_z = (model.predict(s, a) - s_next).pow(2).mean().item()
        kl = kl_to_standard_normal(mean, logvar).mean().item()
    return with_z, without_z, kl


def test_latent_variable_information_is_bounded():
    noise_var = 0.25
    with_z, without_z, kl = fit_latent_variable(z_dim=2, kl_weight=0.01)
    # z helps (it explains part of what the action cannot) ...
    assert with_z < 0.95 * without_z
    # ... but 2 dimensions cannot carry the 8-dimensional surprise: at least ~6/8 of it stays unexplained.
    assert with_z > 0.6 * noise_var
    assert 0.0 < kl < 20.0
    # The same architecture with a z as wide as the state explains nearly everything: the bound is real.
    wide_with_z, _, _ = fit_latent_variable(z_dim=8, kl_weight=0.0)
    assert wide_with_z < 0.5 * with_z


def toy_jepa(vc_weight, steps=300):
    """Observations of a 2-D random walk through a fixed random 32-D projection; an MLP encoder trained to
    predict its next embedding against a stop-gradient target, with or without variance-covariance terms."""
    torch.manual_seed(2)
    projection = torch.randn(2, 32)
    encoder = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    model = WorldModel(WorldModelConfig(latent_dim=8, z_dim=1, predictor_hidden=64, encoder_channels=(8,),
                                        keypoints=0, image_size=8))
    optimizer = torch.optim.Adam([*encoder.parameters(), *model.predictor.parameters()], lr=3e-3, weight_decay=1e-3)
    for _ in range(steps):
        x = torch.rand(256, 2) * 2 - 1
        a = (torch.rand(256, 2) * 2 - 1) * 0.1
        s, s_next = encoder(x @ projection), encoder((x + a) @ projection)
        actions = torch.cat([a / 0.1 * 0.03, torch.zeros(256, 2)], dim=1)
        prediction = (model.predict(s, actions) - s_next.detach()).pow(2).mean()
        variance, covariance = variance_covariance(s)
        loss = prediction + vc_weight * (variance + 0.04 * covariance)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        s = encoder((torch.rand(2048, 2) * 2 - 1) @ projection)
    corr = torch.corrcoef(s.T)
    off_diagonal = (corr - torch.diag(torch.diag(corr))).abs().sum() / (8 * 7)
    return s.std(dim=0), off_diagonal


def test_variance_covariance_regularizer_prevents_collapse():
    std_plain, _ = toy_jepa(vc_weight=0.0)
    std_reg, corr_reg = toy_jepa(vc_weight=1.0)
    assert std_plain.max() < 0.1              # without it the encoder collapses towards a constant
    assert std_reg.min() > 0.8                # with it every dimension keeps its spread
    assert corr_reg < 0.5


TOY_SIZE = 16


def toy_play(rng, batch, length):
    """Sequences of TOY_SIZE^2 frames: a bright 3x3 'arm' moved by the actions and a small red 2x2 'cube' that
    stays where it is within a sequence (and differs between sequences), with the actions (ee_delta units)."""
    start = rng.uniform(3, TOY_SIZE - 4, (batch, 1, 2))
    arm = np.clip(start + np.cumsum(rng.uniform(-1, 1, (batch, length, 2)), axis=1), 1, TOY_SIZE - 2)
    cube = rng.integers(2, TOY_SIZE - 3, (batch, 2))
    frames = np.full((batch, length, TOY_SIZE, TOY_SIZE, 3), 100, np.uint8)
    for b in range(batch):
        frames[b, :, cube[b, 1]:cube[b, 1] + 2, cube[b, 0]:cube[b, 0] + 2] = (200, 40, 40)
        for t, (x, y) in enumerate(np.round(arm[b]).astype(int)):
            frames[b, t, y - 1:y + 2, x - 1:x + 2] = 255
    actions = np.zeros((batch, length - 1, 4), np.float32)
    actions[..., :2] = np.diff(arm, axis=1) * 0.03
    return torch.from_numpy(frames), torch.from_numpy(actions), cube.astype(float)


def cube_probe_after_training(slow_weight, steps=500):
    """Train a tiny world model with the real objective on toy play, then read the cube out of its latent."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = WorldModel(WorldModelConfig(image_size=TOY_SIZE, encoder_channels=(8, 16), keypoints=4, keypoint_stage=1,
                                        latent_dim=8, predictor_hidden=64, z_dim=1))
    cfg = TrainConfig(slow_weight=slow_weight, horizon=3, sequence_length=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        frames, actions, _ = toy_play(rng, 16, 8)
        loss, _ = jepa_loss(model, frames, actions, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    frames, _, cube = toy_play(np.random.default_rng(1), 600, 2)
    with torch.no_grad():
        latents = model.encode(frames[:, 0]).numpy()
    # Pixels as "metres" / 100: the probe reports its error in pixels.
    return ridge_probe(latents[:500], cube[:500] / 100, latents[500:], cube[500:] / 100)


def test_slowness_keeps_a_small_static_object_in_the_latent():
    without = cube_probe_after_training(slow_weight=0.0)
    with_slowness = cube_probe_after_training(slow_weight=3.0)
    # Without it the moving arm fills the latent and the cube is not in it (no better than the mean) ...
    assert without['error_cm'] > 0.9 * without['mean_baseline_cm']
    # ... with it the latent locates the cube.
    assert with_slowness['error_cm'] < 0.5 * with_slowness['mean_baseline_cm']


def test_checkpoint_round_trip_and_mismatch_errors(tmp_path):
    model = small_model()
    path = tmp_path / 'wm.pt'
    model_id = save_checkpoint(model, path, provenance={'bags': []}, metrics={'steps': 0})
    assert model_id.startswith('wm.pt@') and model.model_id == model_id
    assert path.with_suffix('.json').is_file()
    loaded = load_checkpoint(path)
    assert loaded.model_id == model_id
    batch = images(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(batch), model.encode(batch))

    def broken(name, change):
        checkpoint = torch.load(path, weights_only=True)
        change(checkpoint)
        target = tmp_path / name
        torch.save(checkpoint, target)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(target)
        assert name in str(err.value)
        return str(err.value)

    message = broken('shape.pt', lambda c: c['state_dict'].__setitem__('encoder.head.weight', torch.zeros(3, 3)))
    assert 'encoder.head.weight' in message and '(3, 3)' in message
    message = broken('config.pt', lambda c: c['config'].__setitem__('latent_dim', 32))
    assert 'shape mismatch' in message
    assert 'colour' in broken('unknown.pt', lambda c: c['config'].__setitem__('colour', 'red'))
    assert 'format_version 99' in broken('version.pt', lambda c: c.__setitem__('format_version', 99))
    assert "'metrics'" in broken('keys.pt', lambda c: c.pop('metrics'))
    assert "lacks ['keypoints']" in broken('old.pt', lambda c: c['config'].pop('keypoints'))
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='truncated.pt: not a readable torch checkpoint'):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match='no such checkpoint'):
        load_checkpoint(tmp_path / 'absent.pt')


def test_config_overrides_are_typed_and_unknown_keys_named():
    values = parse_overrides(['lr=3e-4', 'horizon=20', 'discount=0.95', 'encoder_channels=[8, 16, 32, 64]'])
    assert values == {'lr': 3e-4, 'horizon': 20, 'discount': 0.95, 'encoder_channels': [8, 16, 32, 64]}
    model_values, train_values = split_overrides(values)
    assert TrainConfig.from_dict(train_values).lr == 3e-4
    assert WorldModelConfig.from_dict(model_values).encoder_channels == (8, 16, 32, 64)
    with pytest.raises(ValueError, match="unknown --set keys \\['lr_max'\\]"):
        split_overrides(parse_overrides(['lr_max=1']))
    with pytest.raises(ValueError, match='--set expects key=value'):
        parse_overrides(['lr'])
