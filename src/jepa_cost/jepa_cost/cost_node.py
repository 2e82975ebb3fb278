"""`cost_node` (node `cost`): evaluates every state the agent perceives.

jepa/latent (+ jepa/goal_latent, joint_states, jepa/action) -> jepa/cost (CostTerms, stamped with the latent's
stamp, each field the weighted term; total = their sum). Weights are the live `weights.*` parameters
(cost.CostWeights; the configurator sets them per task); setting `critic_path` (re)loads the critic, '' removes it.
The energy's metric (cost.EnergyMetric: the effector map and latent variance) comes from the world-model
checkpoint (`checkpoint`, then whatever world_model/model_version announces), as the actor's planning cost does.
With no readable checkpoint yet the node publishes no cost (a cost in some other metric would be a silent
fallback); a checkpoint that cannot be read is refused later on and the metric in use stays.
"""
from dataclasses import dataclass

import numpy as np
import torch
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from jepa_common.conversions import msg_to_latent, stamp_to_sec
from jepa_common.joint_states import JointStateCache
from jepa_common.node import run_node
from jepa_common.parameters import changed_config, declare_config, declare_kinematics, result
from jepa_common.qos import LATCHED, SENSOR
from jepa_common.settings import setting
from jepa_cost.cost import ArmContext, CostWeights, Critic, CriticError, EnergyMetric, IntrinsicCost, TERMS
from jepa_interfaces.msg import ActionStamped, CostTerms, LatentState
from jepa_world_model.model import CheckpointError, read_checkpoint
from jepa_world_model.runtime import resolve_checkpoint


@dataclass
class CostNodeConfig:
    """What the cost node loads and how fresh the arm state must be (the weights: cost.CostWeights)."""
    checkpoint: str = setting('', "world model whose metric the energy uses ('' = the shipped default); setting it "
                              'loads that metric, and a checkpoint that cannot be read is refused', live=True)
    follow_model_version: bool = setting(True, 'take the metric of every world model world_model/model_version '
                                         'announces')
    critic_path: str = setting('', "critic checkpoint ('' = none); setting it (re)loads the critic, '' removes it",
                               live=True)
    joint_state_timeout: float = setting(0.5, 's: a joint state older than this (against the latent\'s stamp) '
                                         'leaves the arm terms out', (0.0, 60.0))

    def __post_init__(self):
        if not self.joint_state_timeout > 0:
            raise ValueError(f'joint_state_timeout must be > 0 s, got {self.joint_state_timeout}')


class CostNode(Node):
    def __init__(self):
        super().__init__('cost')
        self.kinematics = declare_kinematics(self)
        self.settings = declare_config(self, CostNodeConfig)
        self.intrinsic = IntrinsicCost(declare_config(self, CostWeights, prefix='weights.'),
                                       max_step=self.kinematics.max_step)
        self.critic: Critic | None = None
        self.goal: np.ndarray | None = None
        self.last_action: np.ndarray | None = None
        self.joints = JointStateCache(self, self.kinematics.arm_joints)
        self.metric_problem = 'no checkpoint loaded'  # '' once a world model's metric is in use
        self.load_energy_metric(self.settings.checkpoint)
        torch.set_num_threads(1)
        self.publisher = self.create_publisher(CostTerms, 'jepa/cost', 10)
        self.create_subscription(LatentState, 'jepa/latent', self.on_latent, 10)
        self.create_subscription(LatentState, 'jepa/goal_latent', self.on_goal, LATCHED)
        self.create_subscription(ActionStamped, 'jepa/action', self.on_action, 10)
        self.create_subscription(JointState, 'joint_states', self.joints.on_joint_state, SENSOR)
        self.create_subscription(String, 'world_model/model_version', self.on_model_version, LATCHED)
        self.add_on_set_parameters_callback(self.on_parameters)
        if self.settings.critic_path:
            self.load_critic(self.settings.critic_path)

    def load_energy_metric(self, checkpoint: str) -> tuple[bool, str]:
        """Take the energy's metric from a world-model checkpoint; on failure the current metric stays."""
        try:
            state, model_id = read_checkpoint(resolve_checkpoint(checkpoint))
        except CheckpointError as exc:
            if self.metric_problem:
                self.metric_problem = str(exc)
            self.get_logger().error(f'cannot load checkpoint: {exc}; ' + (
                'no cost until a usable one loads' if self.metric_problem else 'keeping the energy metric in use'))
            return False, str(exc)
        self.intrinsic.metric, self.metric_problem = EnergyMetric.of(state['state_dict']), ''
        self.get_logger().info(f'energy metric of model {model_id} (latent scale '
                               f'{self.intrinsic.metric.latent_scale:.4g}, effector map '
                               f'{"yes" if self.intrinsic.metric.effector_map is not None else "none"})')
        return True, ''

    def on_model_version(self, msg: String) -> None:
        if self.settings.follow_model_version and msg.data:
            self.load_energy_metric(msg.data)

    def load_critic(self, path: str) -> tuple[bool, str]:
        if not path:
            self.critic = None
            return True, 'critic removed'
        try:
            self.critic = Critic.load(path)
        except CriticError as exc:
            self.get_logger().error(f'{exc}; keeping the previous critic')
            return False, str(exc)
        self.get_logger().info(f'loaded critic {path} (latents of {self.critic.model_id or "any model"})')
        return True, ''

    def on_parameters(self, parameters):
        """Live: the weights, `checkpoint` (the energy's metric) and `critic_path`; a file that cannot be loaded
        is refused with the reason, and what is in use stays."""
        try:
            weights, reweighted = changed_config(self.intrinsic.weights, parameters, prefix='weights.')
            settings, changed = changed_config(self.settings, parameters)
        except ValueError as exc:
            return result(str(exc))
        loaders = {'checkpoint': self.load_energy_metric, 'critic_path': self.load_critic}
        for name in changed:
            ok, reason = loaders[name](getattr(settings, name))
            if not ok:
                return result(reason)
        self.settings, self.intrinsic.weights = settings, weights
        if reweighted:
            self.get_logger().info(f'cost weights now {weights.as_dict()}')
        return result()

    def on_goal(self, msg: LatentState) -> None:
        try:
            self.goal = msg_to_latent(msg).reshape(-1)
        except ValueError as exc:
            self.get_logger().error(f'ignored goal latent: {exc}')

    def on_action(self, msg: ActionStamped) -> None:
        data = np.asarray(msg.data, dtype=np.float32)
        if data.shape != (4,) or not np.all(np.isfinite(data)):
            self.get_logger().error(f'ignored action: expected 4 finite ee_delta values, got {data.tolist()}',
                                    throttle_duration_sec=2.0)
            return
        self.last_action = data

    def on_latent(self, msg: LatentState) -> None:
        try:
            z = msg_to_latent(msg).reshape(-1)
        except ValueError as exc:
            self.get_logger().error(f'ignored latent: {exc}', throttle_duration_sec=2.0)
            return
        if self.metric_problem:
            self.get_logger().error(f'no energy metric ({self.metric_problem}): no cost to publish',
                                    throttle_duration_sec=5.0)
            return
        if self.goal is None:
            self.get_logger().warn('no goal latent yet: no cost to publish', throttle_duration_sec=5.0)
            return
        if self.goal.shape != z.shape:
            self.get_logger().error(f'latent has {z.size} values but the goal {self.goal.size}: they come from '
                                    'different models; waiting for a matching goal', throttle_duration_sec=2.0)
            return
        q = self.joints.fresh(self.settings.joint_state_timeout, at=stamp_to_sec(msg.header.stamp))
        arm = ArmContext.from_kinematics(self.kinematics, q) if q is not None else None
        z_t, goal_t = torch.from_numpy(z), torch.from_numpy(self.goal)
        action = torch.from_numpy(self.last_action) if self.last_action is not None else None
        with torch.no_grad():
            terms = self.intrinsic.state_terms(z_t, goal_t, action, arm)
            critic = 0.0
            if self.critic is not None and self.intrinsic.weights.critic > 0:
                if self.critic.latent_dim != z.size or (self.critic.model_id and self.critic.model_id != msg.model_id):
                    self.get_logger().error(f'critic is for latents of {self.critic.model_id!r} '
                                            f'(dim {self.critic.latent_dim}), this latent is from {msg.model_id!r}; '
                                            'critic term left out', throttle_duration_sec=5.0)
                else:
                    critic = float(self.critic(z_t, goal_t))
        w = self.intrinsic.weights
        out = CostTerms(**{name: getattr(w, name) * terms[name] for name in TERMS}, critic=w.critic * critic)
        out.total = sum(getattr(out, name) for name in TERMS) + out.critic
        out.header = msg.header
        self.publisher.publish(out)


def main(args=None) -> int:
    return run_node(CostNode, args)
