"""The shipped push agent's parts, for the in-process research scripts: the world model, the graph's push settings
(actor config and cost weights), the shipped higher level and a workbench around them, torch on one thread."""
import torch

from jepa_bringup.agent_settings import graph_settings
from jepa_bringup.episodes import sim_camera
from jepa_bringup.sim_episodes import SimWorkbench
from jepa_world_model.high_level import HighLevelModel, default_high_level_path
from jepa_world_model.model import default_checkpoint_path, encoder_id, load_checkpoint


def shipped_push():
    """-> model, ActorConfig, CostWeights, HighLevelModel, SimWorkbench."""
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    config, weights = graph_settings('push')
    high = HighLevelModel.load(default_high_level_path(default_checkpoint_path()), encoder_id(model),
                               model.latent_dim)
    return model, config, weights, high, SimWorkbench(model, sim_camera())
