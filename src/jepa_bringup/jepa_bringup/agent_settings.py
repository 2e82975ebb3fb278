"""The agent's settings as the graph runs them: config/agent.yaml's overrides on the config dataclasses' defaults.
Imports no simulator or bag reader, so that scripts on a host without them (a GPU host) read the same settings."""
from pathlib import Path

import yaml

from jepa_actor.actor import ActorConfig
from jepa_common.paths import package_share
from jepa_configurator.configurator import task_levels, task_skill, task_weights
from jepa_cost.cost import CostWeights


def agent_params(params_file: Path | str | None = None) -> dict:
    """The agent nodes' params file (default: the installed config/agent.yaml), node name -> ros__parameters:
    the deployment's overrides only (a node or setting it leaves out runs on its defaults)."""
    path = Path(params_file) if params_file else Path(package_share('jepa_bringup')) / 'config' / 'agent.yaml'
    params = yaml.safe_load(path.read_text())
    return {node: section['ros__parameters'] for node, section in params.items()}


def graph_settings(task: str, params_file: Path | str | None = None) -> tuple[ActorConfig, CostWeights]:
    """The actor's settings (with the task's levels and skill) and the task's cost weights as the graph's params file
    sets them."""
    params = agent_params(params_file)
    actor, configurator = params.get('actor', {}), params.get('configurator', {})
    config = ActorConfig().changed(**{k: v for k, v in actor.items() if k in ActorConfig.names()})
    config = config.changed(skill=task_skill(task, configurator.get('skills')),
                            levels=task_levels(task, configurator.get('levels')))
    return config, task_weights(task, configurator.get('tasks'))
