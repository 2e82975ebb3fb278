"""ROS-free cores of the world_model and perception nodes: loading, pairing latents with actions, surprise,
batched rollouts, image encoding."""
import numpy as np
import pytest
import torch

from jepa_world_model.model import CheckpointError, WorldModel, WorldModelConfig, save_checkpoint
from jepa_world_model.runtime import LoadedModel, OnlinePredictor, resolve_checkpoint, select_device

SMALL = dict(image_size=32, latent_dim=16, encoder_channels=(8, 8, 8, 8), predictor_hidden=32, z_hidden=16,
             inverse_hidden=16)


def make_checkpoint(path, seed: int = 0, **overrides) -> str:
    """A small randomly initialised checkpoint (fast to load in every test process)."""
    torch.manual_seed(seed)
    model = WorldModel(WorldModelConfig(**{**SMALL, **overrides}))
    # Predictions that actually depend on the action, so pairing mistakes show.
    model.predictor[-1].weight.data.normal_(0.0, 0.3)
    save_checkpoint(model, path, provenance={'made_by': 'tests'})
    return str(path)


MS = 1_000_000


def test_loaded_model_reloads_only_changed_files_and_keeps_the_old_model_on_failure(tmp_path):
    first = make_checkpoint(tmp_path / 'a.pt', seed=0)
    loaded = LoadedModel(first, 'cpu')
    model_id = loaded.model_id
    assert loaded.load(first) is False  # unchanged file: no reload
    (tmp_path / 'broken.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError):
        loaded.load(str(tmp_path / 'broken.pt'))
    with pytest.raises(CheckpointError):
        loaded.load(str(tmp_path / 'missing.pt'))
    assert loaded.model_id == model_id and loaded.checkpoint == first
    second = make_checkpoint(tmp_path / 'b.pt', seed=1)
    assert loaded.load(second) is True and loaded.model_id != model_id
    assert resolve_checkpoint('').endswith('checkpoints/default.pt')
    assert select_device('auto').type in ('cpu', 'cuda')
    with pytest.raises(ValueError):
        select_device('tpu')


def test_prediction_pairs_each_latent_with_the_action_taken_from_it(tmp_path):
    loaded = LoadedModel(make_checkpoint(tmp_path / 'm.pt'), 'cpu')
    predictor = OnlinePredictor(loaded, action_window_ns=100 * MS)
    rng = np.random.default_rng(0)
    z0, z1, z2 = (rng.standard_normal(16).astype(np.float32) for _ in range(3))
    a0, a1 = np.array([0.03, 0, 0, 1], np.float32), np.array([0, -0.03, 0.01, -1], np.float32)
    # The action may arrive before its latent (the encoder is slower than the actor's stamp)...
    assert predictor.observe_action(a0, 1000 * MS + 5 * MS) is None
    predictions, surprise = predictor.observe_latent(z0, 1000 * MS)
    assert surprise is None and len(predictions) == 1
    predicted0, source = predictions[0]
    assert source == 1000 * MS
    with torch.inference_mode():
        expected = loaded.model.predict(torch.from_numpy(z0)[None], torch.from_numpy(a0)[None])[0].numpy()
    np.testing.assert_allclose(predicted0, expected, rtol=1e-5, atol=1e-6)
    # ...or after it.
    predictions, surprise = predictor.observe_latent(z1, 1100 * MS)
    assert predictions == []
    error, normalized, source = surprise
    assert source == 1000 * MS
    assert error == pytest.approx(float(np.mean((predicted0 - z1) ** 2)), rel=1e-5)
    assert normalized == pytest.approx(error / float(loaded.model.latent_var.mean()), rel=1e-5)
    predicted1, source = predictor.observe_action(a1, 1100 * MS + 40 * MS)
    assert source == 1100 * MS
    assert not np.allclose(predicted1, predicted0)
    # No action for z2: the last one is assumed to continue once the next latent shows it was executed.
    predictions, surprise = predictor.observe_latent(z2, 1200 * MS)
    assert surprise is not None and surprise[2] == 1100 * MS
    predictions, surprise = predictor.observe_latent(z0, 1300 * MS)
    assert [p[1] for p in predictions] == [1200 * MS] and surprise[2] == 1200 * MS


def test_time_going_backwards_starts_over_and_bad_inputs_raise(tmp_path):
    loaded = LoadedModel(make_checkpoint(tmp_path / 'm.pt'), 'cpu')
    predictor = OnlinePredictor(loaded)
    z = np.zeros(16, np.float32)
    predictor.observe_action(np.zeros(4, np.float32), 10 * MS)
    predictor.observe_latent(z, 5 * MS)
    _, surprise = predictor.observe_latent(z, 1 * MS)  # a replay restarted
    assert surprise is None
    with pytest.raises(ValueError, match='16'):
        predictor.observe_latent(np.zeros(15, np.float32), 2 * MS)
    with pytest.raises(ValueError, match='NaN'):
        predictor.observe_latent(np.full(16, np.nan, np.float32), 3 * MS)
    with pytest.raises(ValueError, match='action has 3 values, the model uses 4'):
        predictor.observe_action(np.zeros(3, np.float32), 3 * MS)
    with pytest.raises(ValueError, match='NaN'):
        predictor.observe_action(np.array([0, np.inf, 0, 0], np.float32), 3 * MS)


def test_batched_rollout_matches_step_by_step_prediction(tmp_path):
    loaded = LoadedModel(make_checkpoint(tmp_path / 'm.pt'), 'cpu')
    predictor = OnlinePredictor(loaded)
    rng = np.random.default_rng(1)
    start = rng.standard_normal(16).astype(np.float32)
    actions = rng.uniform(-0.03, 0.03, (5, 7, 4)).astype(np.float32)
    predicted = predictor.rollout(start, actions)
    assert predicted.shape == (5, 7, 16) and predicted.dtype == np.float32
    with torch.inference_mode():
        z = torch.from_numpy(start)[None]
        for t in range(7):
            z = loaded.model.predict(z, torch.from_numpy(actions[3, t])[None])
    np.testing.assert_allclose(predicted[3, -1], z[0].numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        predictor.rollout(start, actions[..., :3])
    with pytest.raises(ValueError):
        predictor.rollout(start, np.zeros((0, 3, 4), np.float32))


def test_image_encoder_resizes_rejects_bad_images_and_is_deterministic(tmp_path):
    from jepa_perception.encoder import ImageEncoder
    from jepa_world_model.runtime import LatencyStats
    encoder = ImageEncoder(make_checkpoint(tmp_path / 'm.pt'), 'cpu')
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    latent = encoder.encode(image)
    assert latent.shape == (16,) and latent.dtype == np.float32
    np.testing.assert_array_equal(encoder.encode(image), latent)
    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    resized, was_resized = encoder.prepare(big)
    assert was_resized and resized.shape == (32, 32, 3)
    np.testing.assert_allclose(encoder.encode(big), latent, atol=1e-4)  # 2x2 blocks average back to image
    with pytest.raises(ValueError):
        encoder.prepare(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError):
        encoder.prepare(np.zeros((32, 32, 3), np.float32))
    stats = LatencyStats(window=10)
    for ms in range(1, 21):
        stats.add(ms / 1e3)
    p50, p95 = stats.percentiles()
    assert stats.count == 20 and 15 <= p50 <= 16 and 19 <= p95 <= 20


def test_image_encoder_feeds_joint_positions_to_checkpoints_that_use_them(tmp_path):
    from jepa_perception.encoder import ImageEncoder
    encoder = ImageEncoder(make_checkpoint(tmp_path / 'proprio.pt', use_proprio=True), 'cpu')
    assert encoder.uses_proprio
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match='joint positions'):
        encoder.encode(image)
    a = encoder.encode(image, np.zeros(9, np.float32))
    b = encoder.encode(image, np.full(9, 0.5, np.float32))
    assert a.shape == (16,) and not np.allclose(a, b)


def test_the_world_model_core_and_the_perception_core_run_without_ros():
    """The modules a notebook, `jepa train` or a bench imports must not pull in rclpy (only the *_node modules do)."""
    import subprocess
    import sys
    core = ['jepa_world_model.' + m for m in ('model', 'dataset', 'train', 'eval_model', 'surprise', 'runtime',
                                              'readout', 'fit_readout', 'image_statistics')]
    core += ['jepa_perception.encoder', 'jepa_perception.frame_check']
    code = f'import sys\nfor m in {core!r}:\n    __import__(m)\nprint(sorted(m for m in sys.modules if m.startswith("rclpy")))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'
