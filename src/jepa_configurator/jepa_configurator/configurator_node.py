"""`configurator_node` (node `configurator`): gives the agent its task and adjusts it when it is surprised.

- configurator/set_task (SetTask): the goal image (or a named goal rendered by sim/render_state, or read
  from an image file, or a goal pose `goal_name: ee:x,y,z` rendered at its IK configuration) goes out on
  jepa/goal_image (latched; perception turns it into jepa/goal_latent); the task's cost weights, the actor's
  higher level (`levels`, `skill`) and the mode go to the `cost` and `actor` nodes through their parameter
  services. The task profiles are configurator.TASK_PROFILES, overridden by `tasks.<task>.<weight>` (live: a change
  applies from the next set_task), `skills.<task>`, `levels.<task>` and `task_adjust.<task>`.
- jepa/surprise: once surprise is sustained (at least `surprise.patience` consecutive steps above
  `surprise.threshold` times the error the model in service made on its held-out data, spanning at least
  `surprise.min_span` s with no gap over `surprise.max_gap` s; configurator.SurpriseMonitor), the short-term
  memory is saved to a bag and, in a worker thread, what the task's `task_adjust` (else `adjust`) names is
  corrected on it (one adjustment at a time, from trigger to install): the world model's predictor is fine-tuned
  (`world_model_tuning.*`) and installed through the `world_model` node's `checkpoint`, which announces it to every
  other module; the critic is retrained (`critic_tuning.*`) and loaded by cost and actor through their
  `critic_path`. Each is kept only if it predicts the most recent transitions, held out from its training, better
  than what is in service by a margin noise cannot produce (`keep_if_better.*`); otherwise what is in service
  stays. Each outcome is announced on configurator/adjustment (std_msgs/String, JSON: kind, installed, and the
  figures or the reason), logged and counted on /diagnostics.
- jepa/latent and joint_states: the hand-reading check (`hand_reading.*`, configurator.HandReadingCheck) compares
  where the effector map of the model in service reads the hand in each latent with where forward kinematics of the
  joint states at the latent's stamp put it. When perception has drifted (most recent windows off by more than
  `hand_reading.threshold`; each judged window is published on configurator/hand_reading, std_msgs/String JSON:
  stamp, window_cm, median_cm) and the task's adjustments include `encoder`, the short-term memory's raw play since
  the drift began is saved to a bag once `hand_reading.min_play` s of it are kept (short_term_memory/save_play) and,
  in the same worker, the encoder is re-calibrated on it
  (`encoder_tuning.*`, adjust_encoder) and installed through the `world_model` node as above; announced on
  configurator/adjustment as kind `encoder`. A drift the check reports again while an adjustment runs is
  re-calibrated once that one ends without putting a new model in service (a refused re-calibration is retried
  on the longer play since the drift began); one that did install a model starts the check again.
- The model in service is `checkpoint` ('' = the shipped default) until world_model/model_version announces
  one (the surprise baseline is read from it; surprise reported by another model is not counted). An unreadable
  checkpoint is named in the log and no surprise counts until a usable one is in service; set at runtime, it
  is refused.
"""
import collections
import concurrent.futures
import dataclasses
import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose
from rcl_interfaces.srv import SetParametersAtomically
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from jepa_actor.actor import normalize_mode
from jepa_common.conversions import image_to_rgb, joint_positions, msg_to_latent, rgb_to_image, sec_to_stamp, \
    stamp_to_sec
from jepa_common.node import run_node
from jepa_common.parameters import changed_config, declare, declare_config, declare_kinematics, result
from jepa_common.qos import LATCHED, RELIABLE, SENSOR
from jepa_common.settings import setting
from jepa_configurator.adjust_encoder import EncoderTuning
from jepa_configurator.adjust_world_model import FineTuning, KeepIfBetter
from jepa_configurator.configurator import ADJUSTMENTS, TASK_PROFILES, TASKS, HandReadingCheck, SurpriseMonitor, \
    TaskProfile, adjust_from_memory, held_out_one_step_error, recalibrate_from_play
from jepa_configurator.train_critic import CriticTuning
from jepa_cost.cost import CostWeights
from jepa_interfaces.msg import LatentState, Surprise
from jepa_interfaces.srv import RenderState, SaveEpisodes, SavePlay, SetTask
from jepa_world_model.model import CheckpointError, model_from_checkpoint, read_checkpoint
from jepa_world_model.runtime import resolve_checkpoint


# s between a latent's stamp and the joint state its hand is measured from (joint states come at ~100 Hz).
JOINT_STAMP_TOLERANCE = 0.02
# What a named goal (goals.<name>.<key>) may say; dynamically typed, as a params file writes numbers either way.
GOAL_KEYS = {'joint_positions': 'arm joint positions (rad) the goal image is rendered at',
             'cube_position': 'cube x, y, z (m) in the rendered goal image; unset = where the cube is',
             'image': 'an image file that is the goal image (a real scene), in place of a rendering'}


@dataclass
class ConfiguratorNodeConfig:
    """The configurator node's own settings (the task profiles: configurator.TASK_PROFILES; surprise:
    SurpriseMonitor; the adjustments: FineTuning, CriticTuning, KeepIfBetter)."""
    task: str = setting('reach', f'task to start with ({", ".join(TASKS)}); configurator/set_task changes it')
    mode: str = setting('mode2', 'mode to start with: mode2|mpc (plan through the world model), mode1|policy '
                        '(reactive); configurator/set_task changes it')
    goal_name: str = setting('', "a named goal (goals.<name>) or goal pose (ee:x,y,z) to start the task with at once "
                             "('' = wait for configurator/set_task)")
    render_goals: bool = setting(True, "render goals given as joint positions (named goals, ee:x,y,z poses) with the "
                                 "simulator's sim/render_state; false where no simulator runs (a physical arm: its "
                                 "named goals are images), and then no sim/ client exists")
    configure_nodes: list[str] = setting(['cost', 'actor'], "nodes that get the task's weights.*, mode and skill, and "
                                         "the retrained critic's critic_path ('' entries are ignored)")
    # Not the critic by default: no profile weighs it (configurator.TASK_PROFILES).
    adjust: list[str] = setting(['world_model', 'encoder'], f'what may be adjusted ({", ".join(ADJUSTMENTS)}: '
                                'the world model and the critic after sustained surprise, the encoder after the '
                                "hand-reading check) in a task whose task_adjust does not say otherwise ('' entries "
                                'are ignored)')
    checkpoint: str = setting('', "the world model in service until world_model/model_version announces one ('' = the "
                              'shipped default); setting it switches the surprise baseline to that model, and one '
                              'that cannot be read is refused', live=True)
    critic_path: str = setting('', "the critic in service at start ('' = none): a retrained one continues from it "
                               'and must beat it')
    work_dir: str = setting('~/.jepa/agent', 'where memory bags and adjusted world models and critics are written')
    service_timeout: float = setting(10.0, 's to wait for another node\'s service to come up, at most 3 (the wait '
                                     'holds the executor)', (0.0, 3600.0))
    diagnostics_period: float = setting(2.0, 's between /diagnostics reports', (0.01, 3600.0))

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f'unknown task {self.task!r} (known: {", ".join(TASKS)})')
        self.mode = normalize_mode(self.mode)
        self.configure_nodes = [n for n in self.configure_nodes if n]
        self.adjust = list(TaskProfile(adjust=self.adjust).adjust)  # checked there
        if not (self.service_timeout > 0 and self.diagnostics_period > 0):
            raise ValueError(f'service_timeout and diagnostics_period must be > 0 s, got {self.service_timeout} and '
                             f'{self.diagnostics_period}')


class ConfiguratorNode(Node):
    def __init__(self):
        super().__init__('configurator')
        self.settings = declare_config(self, ConfiguratorNodeConfig)
        self.task, self.mode = self.settings.task, self.settings.mode
        self.kinematics = declare_kinematics(self)
        self.arm_joints = list(self.kinematics.arm_joints)
        self.targets = self.settings.configure_nodes
        self.profiles = self.declare_profiles()
        self.goals = {}
        for name in declare(self, 'goal_names', [], 'named goals, each defined by goals.<name>.joint_positions (and '
                            'cube_position) or goals.<name>.image', element_type=str):
            if name:
                self.goals[name] = {key: declare(self, f'goals.{name}.{key}', None, description)
                                    for key, description in GOAL_KEYS.items()}
        self.monitor = declare_config(self, SurpriseMonitor, prefix='surprise.')
        self.tuning = declare_config(self, FineTuning, prefix='world_model_tuning.')
        self.critic_tuning = declare_config(self, CriticTuning, prefix='critic_tuning.')
        self.keep_if_better = declare_config(self, KeepIfBetter, prefix='keep_if_better.')
        self.hand_reading = declare_config(self, HandReadingCheck, prefix='hand_reading.')
        self.encoder_tuning = declare_config(self, EncoderTuning, prefix='encoder_tuning.')
        # Joint states of the last second (stamp, arm positions): the hand is measured at each latent's stamp.
        self.joint_history: collections.deque = collections.deque(maxlen=256)
        self.effector_map: tuple[np.ndarray, np.ndarray] | None = None  # (weight (3, D), scale (3,)) in service
        self.work_dir = Path(os.path.expanduser(self.settings.work_dir))
        self.critic_path = self.settings.critic_path  # the critic in service; adjustments replace it

        self.counts = {'tasks': 0, 'task_failures': 0, 'surprise_triggers': 0, 'critic_updates': 0, 'critic_kept': 0,
                       'world_model_updates': 0, 'world_model_kept': 0, 'hand_reading_triggers': 0,
                       'encoder_updates': 0, 'encoder_kept': 0, 'adjustment_failures': 0}
        # A drift reported while an adjustment ran, (reason, task): re-calibrated when it ends, unless it put a new
        # model in service (the check starts again for that one).
        self._drift_pending: tuple[str, str] | None = None
        self._recalibrations = 0  # started, retries included: each names its own play bag and model
        # The world model in service until world_model/model_version announces one ('' = the shipped default).
        self.world_model_checkpoint = ''
        self.follow_world_model(self.settings.checkpoint)
        self.last_event = ''
        self._training: concurrent.futures.Future | None = None
        # An adjustment runs from its trigger until what it produced is installed (or refused): a trigger in
        # between must not start another from a half-installed state (a critic for the new model, latents
        # and model of the old one).
        self._adjusting = False
        self._trainer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        # Set on shutdown: a re-calibration (about a minute of training) stops at its next step, so the process
        # exits on SIGINT instead of waiting for its worker thread.
        self._stopping = threading.Event()
        torch.set_num_threads(1)  # adjustments share the machine with the planner

        self.goal_image_pub = self.create_publisher(Image, 'jepa/goal_image', LATCHED)
        self.adjustment_pub = self.create_publisher(String, 'configurator/adjustment', 10)
        self.hand_reading_pub = self.create_publisher(String, 'configurator/hand_reading', 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # Responses must be handled while a service callback awaits them: a group of their own, reentrant.
        responses = ReentrantCallbackGroup()
        self.param_clients = {name: self.create_client(SetParametersAtomically, f'{name}/set_parameters_atomically',
                                                       callback_group=responses)
                              for name in {*self.targets, 'world_model'}}
        self.render_client = self.create_client(RenderState, 'sim/render_state', callback_group=responses) \
            if self.settings.render_goals else None
        self.save_client = self.create_client(SaveEpisodes, 'short_term_memory/save', callback_group=responses)
        self.save_play_client = self.create_client(SavePlay, 'short_term_memory/save_play', callback_group=responses)
        self.create_service(SetTask, 'configurator/set_task', self.on_set_task)
        self.create_subscription(Surprise, 'jepa/surprise', self.on_surprise, 10)
        if self.hand_reading.enabled:
            # Joint states first: the executor takes ready messages in subscription order, so a busy node that
            # wakes to a latent and its frame's joint state files the joints before it judges the latent.
            self.create_subscription(JointState, 'joint_states', self.on_joint_state, SENSOR)
            self.create_subscription(LatentState, 'jepa/latent', self.on_latent, RELIABLE)
        self.create_subscription(String, 'world_model/model_version',
                                 lambda msg: self.follow_world_model(msg.data), LATCHED)
        self.add_on_set_parameters_callback(self.on_parameters)
        self.create_timer(0.5, self.check_training)
        self.create_timer(self.settings.diagnostics_period, self.publish_diagnostics)
        if self.settings.goal_name and self.task != 'idle':
            self._startup = self.create_timer(1.0, self.start_initial_task)
        self.get_logger().info(f'task {self.task}, mode {self.mode}, named goals {sorted(self.goals)}, '
                               f'adjusts {self.settings.adjust} after {self.monitor.patience} surprising steps')

    def declare_profiles(self) -> dict[str, TaskProfile]:
        """The task profiles: TASK_PROFILES with this node's `tasks.<task>.<weight>`, `skills.<task>`,
        `levels.<task>` and `task_adjust.<task>` parameters."""
        profiles = {}
        for task, default in TASK_PROFILES.items():
            weights = declare_config(self, CostWeights, prefix=f'tasks.{task}.', defaults=default.weights)
            skill = declare(self, f'skills.{task}', default.skill, f"the actor's higher level in task {task}: '' = "
                            'plan towards the goal, push = the scripted push skill')
            levels = declare(self, f'levels.{task}', default.levels, f"the actor's levels in task {task}: 1 = plan "
                             'towards the goal, 2 = the learned higher level sets sub-goals', (1, 2))
            adjust = declare(self, f'task_adjust.{task}', list(default.adjust if default.adjust is not None
                                                               else self.settings.adjust),
                             f"what sustained surprise in task {task} adjusts ({', '.join(ADJUSTMENTS)}); [''] = "
                             'nothing', element_type=str)
            try:
                profiles[task] = TaskProfile(weights, skill, tuple(adjust), levels)
            except ValueError as exc:
                raise ValueError(f'{self.get_name()}: invalid parameters of task {task}: {exc}') from exc
        return profiles

    # ----- tasks
    async def start_initial_task(self) -> None:
        self._startup.cancel()
        ok, message = await self.apply_task(self.task, None, self.settings.goal_name, '')
        self.get_logger().info(f'initial task {self.task} / {self.settings.goal_name}: {message}')

    async def on_set_task(self, request: SetTask.Request, response: SetTask.Response) -> SetTask.Response:
        image = request.goal_image if request.goal_image.data else None
        response.success, response.message = await self.apply_task(request.task or self.task, image,
                                                                    request.goal_name, request.mode)
        self.counts['tasks' if response.success else 'task_failures'] += 1
        if response.success:
            self.get_logger().info(f'set_task: {response.message}')
        else:
            self.get_logger().error(f'set_task: {response.message}')
        return response

    async def apply_task(self, task: str, image: Image | None, goal_name: str, mode: str) -> tuple[bool, str]:
        try:
            if task not in self.profiles:
                raise ValueError(f'unknown task {task!r} (known: {", ".join(TASKS)})')
            profile = self.profiles[task]
            mode = 'idle' if task == 'idle' else normalize_mode(mode) if mode else \
                (self.mode if self.mode != 'idle' else 'mode2')
            if image is not None:
                image_to_rgb(image)  # validates encoding and size
            elif goal_name:
                image = await self.named_goal_image(goal_name)
            elif task != 'idle':
                raise ValueError(f'task {task!r} needs a goal: a goal_image or a goal_name '
                                 f'(known: {", ".join(sorted(self.goals)) or "none"})')
        except (ValueError, OSError) as exc:
            return False, str(exc)
        if image is not None:
            image.header.stamp = self.get_clock().now().to_msg()
            self.goal_image_pub.publish(image)
        problems = []
        for name in self.targets:
            values = {f'weights.{w}': float(v) for w, v in profile.weights.as_dict().items()}
            if name == 'actor':
                values['mode'] = mode
                values['skill'] = profile.skill
                values['levels'] = profile.levels
            problem = await self.set_parameters(name, values)
            if problem:
                problems.append(problem)
        if task != self.task:
            self.monitor.new_task()
        self.task, self.mode = task, mode
        goal = 'a goal image' if image is not None and not goal_name else goal_name or 'no goal'
        if problems:
            return False, f'task {task} with {goal}, but: ' + '; '.join(problems)
        return True, f'task {task} with {goal}, mode {mode}, weights {profile.weights.as_dict()}'

    def pose_goal(self, name: str) -> dict:
        """'ee:x,y,z' (metres, base frame): the arm configuration that puts the end effector there, tool down."""
        try:
            xyz = np.array([float(v) for v in name[3:].split(',')])
        except ValueError:
            xyz = np.zeros(0)
        if xyz.shape != (3,):
            raise ValueError(f'goal pose {name!r} must be ee:x,y,z in metres')
        box = self.kinematics.workspace
        if np.any(xyz < box[:, 0]) or np.any(xyz > box[:, 1]):
            raise ValueError(f'goal pose {xyz.tolist()} is outside the workspace {box.tolist()}')
        q = self.kinematics.ik(self.kinematics.home, xyz, iterations=200)
        error = float(np.linalg.norm(self.kinematics.fk(q) - xyz))
        if error > 0.01:
            raise ValueError(f'goal pose {xyz.tolist()} is out of reach (IK misses it by {error:.3f} m)')
        return {'joint_positions': q.tolist()}

    async def named_goal_image(self, name: str) -> Image:
        """A goal image for a named goal of the config, or a goal pose 'ee:x,y,z'."""
        goal = self.pose_goal(name) if name.startswith('ee:') else self.goals.get(name)
        if goal is None:
            raise ValueError(f'unknown goal name {name!r} (known: {", ".join(sorted(self.goals)) or "none"}, '
                             'or ee:x,y,z)')
        if goal.get('image'):
            bgr = cv2.imread(os.path.expanduser(goal['image']), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f'goal {name!r}: cannot read image file {goal["image"]}')
            return rgb_to_image(bgr[:, :, ::-1].copy())
        positions = goal.get('joint_positions')
        if not positions or len(positions) != len(self.arm_joints):
            raise ValueError(f'goal {name!r} needs joint_positions for {len(self.arm_joints)} joints or an image file')
        if self.render_client is None:
            raise ValueError(f'goal {name!r} is given as joint positions, which only the simulator renders, and '
                             'render_goals is false here: give it an image file (jepa calibrate captures one)')
        request = RenderState.Request(joint_names=self.arm_joints, joint_positions=[float(v) for v in positions])
        cube = goal.get('cube_position')
        if cube:
            request.set_cube = True
            request.cube_pose = Pose()
            request.cube_pose.position.x, request.cube_pose.position.y, request.cube_pose.position.z = map(float, cube)
            request.cube_pose.orientation.w = 1.0
        response = await self.call(self.render_client, request, 'sim/render_state')
        if not response.success:
            raise ValueError(f'rendering goal {name!r} failed: {response.message}')
        return response.image

    async def call(self, client, request, name: str):
        """Await a service call; ValueError when the server is not up (no waiting inside the executor)."""
        if not client.service_is_ready():
            deadline = time.monotonic() + min(self.settings.service_timeout, 3.0)
            while not client.service_is_ready() and time.monotonic() < deadline:
                client.wait_for_service(0.05)
            if not client.service_is_ready():
                raise ValueError(f'{name} is not available')
        return await client.call_async(request)

    async def set_parameters(self, node_name: str, values: dict) -> str:
        """Set parameters on another node; '' when all were accepted, else what went wrong."""
        request = SetParametersAtomically.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        try:
            response = await self.call(self.param_clients[node_name], request, f'{node_name}/set_parameters_atomically')
        except ValueError as exc:
            return str(exc)
        return '' if response.result.successful else f'{node_name} rejected {sorted(values)}: {response.result.reason}'

    # ----- surprise -> adjustment
    def follow_world_model(self, checkpoint: str, read: tuple[dict, str] | None = None) -> None:
        """The model in service changed: surprise is judged against the error it makes on its own held-out
        data, and only its own surprise counts. A checkpoint without that figure leaves the threshold absolute
        (baseline 1); with an unreadable one no model is in service, and no surprise counts until one is (its
        baseline is unknown, and it could not be adjusted). `read`: the checkpoint as read_checkpoint returned
        it, when the caller has read it already (the file is read once)."""
        self.world_model_checkpoint = checkpoint
        path = resolve_checkpoint(checkpoint)
        try:
            stored, model_id = read or read_checkpoint(path)
        except CheckpointError as exc:
            self.get_logger().error(f'cannot load checkpoint: {exc}; no surprise counts until a usable world model '
                                    'is in service')
            self.monitor.serve_none()
            return
        baseline = held_out_one_step_error(stored)
        self.monitor.serve(model_id, baseline or 1.0)
        self.hand_reading.restart()
        self._drift_pending = None
        self.effector_map = None
        if self.hand_reading.enabled:
            try:
                model = model_from_checkpoint(stored, path, model_id)
            except CheckpointError as exc:
                self.get_logger().error(f'cannot load the effector map of {path}: {exc}; the hand reading is not '
                                        'checked until a usable world model is in service')
                return
            translation = model.config.translation_dims
            self.effector_map = (model.inverse_translation.weight.detach().numpy().astype(float),
                                 model.action_scale[:translation].numpy().astype(float))
        self.get_logger().info(f'surprising above {self.monitor.threshold} x {self.monitor.baseline:.4g} normalized '
                               f'error ({path}: {"held-out one-step error" if baseline else "no held-out figure"})')

    def on_parameters(self, parameters):
        """Live: the task profiles' weights (they apply from the next set_task) and `checkpoint`, which must be a
        readable world model: an unreadable one is refused and the model in service stays (following it would
        leave none in service)."""
        try:
            weights = {task: changed_config(profile.weights, parameters, prefix=f'tasks.{task}.')[0]
                       for task, profile in self.profiles.items()}
            settings, changed = changed_config(self.settings, parameters)
        except ValueError as exc:
            return result(str(exc))
        if 'checkpoint' in changed:
            try:
                read = read_checkpoint(resolve_checkpoint(settings.checkpoint))
            except CheckpointError as exc:
                in_service = resolve_checkpoint(self.world_model_checkpoint)
                return result(f'cannot load checkpoint: {exc}; keeping {in_service}')
            self.follow_world_model(settings.checkpoint, read)
        self.settings = settings
        for task, profile in self.profiles.items():
            self.profiles[task] = dataclasses.replace(profile, weights=weights[task])
        return result()

    def on_surprise(self, msg: Surprise) -> None:
        if self.monitor.observe(float(msg.normalized_error), stamp_to_sec(msg.header.stamp), msg.model_id):
            self.counts['surprise_triggers'] += 1
            reason = (f'normalized surprise above {self.monitor.threshold} x {self.monitor.baseline:.4g} for at least '
                      f'{self.monitor.patience} consecutive steps over {self.monitor.min_span} s (last '
                      f'{msg.normalized_error:.4f}, model {msg.model_id})')
            self.get_logger().warn(f'plans keep missing their predicted outcome: {reason}')
            self.executor.create_task(self.adjust_after_surprise(reason, self.task))

    def on_joint_state(self, msg: JointState) -> None:
        try:
            self.joint_history.append((stamp_to_sec(msg.header.stamp), joint_positions(msg, self.arm_joints)))
        except ValueError as exc:
            self.get_logger().error(f'ignored joint state: {exc}', throttle_duration_sec=2.0)

    def on_latent(self, msg: LatentState) -> None:
        """The hand-reading check: where the latent reads the hand, against the joints at the latent's stamp."""
        if self.effector_map is None or msg.model_id != self.monitor.model_id or not self.joint_history:
            return
        stamp = stamp_to_sec(msg.header.stamp)
        stamps = np.array([s for s, _ in self.joint_history])
        nearest = int(np.argmin(np.abs(stamps - stamp)))
        if abs(stamps[nearest] - stamp) > JOINT_STAMP_TOLERANCE:
            return
        try:
            z = msg_to_latent(msg).reshape(-1)
        except ValueError as exc:
            self.get_logger().error(f'ignored latent: {exc}', throttle_duration_sec=2.0)
            return
        weight, scale = self.effector_map
        if z.shape != (weight.shape[1],):
            self.get_logger().error(f'ignored latent: {z.size} values for the {weight.shape[1]} of the model in '
                                    'service', throttle_duration_sec=2.0)
            return
        measured = self.kinematics.fk(self.joint_history[nearest][1])
        fired = self.hand_reading.observe(stamp, (weight @ z) * scale, measured)
        if math.isfinite(self.hand_reading.last_window):
            self.hand_reading_pub.publish(String(data=json.dumps({
                'stamp': stamp, 'window_cm': round(self.hand_reading.last_window * 100, 3),
                'median_cm': round(self.hand_reading.last_median * 100, 3)
                if math.isfinite(self.hand_reading.last_median) else None})))
        if fired:
            self.counts['hand_reading_triggers'] += 1
            reason = (f'the hand read from the latents is {self.hand_reading.last_median * 100:.1f} cm (median over '
                      f'{self.hand_reading.windows} windows of {self.hand_reading.window:g} s) from where the joints '
                      f'put it, above {self.hand_reading.threshold * 100:g} cm')
            self.get_logger().warn(f'perception has drifted from the arm: {reason}')
            self.start_recalibration(reason, self.task, stamp)

    def start_recalibration(self, reason: str, task: str, stamp: float) -> None:
        """Re-calibrate the encoder on the play since the drift began, if `task` (the task the drift was seen in)
        adjusts the encoder: at once if `hand_reading.min_play` s of it are kept, else once they are."""
        if 'encoder' not in self.profiles[task].adjust:
            return self.event(f'perception has drifted ({reason}); task {task} does not adjust the encoder')
        if self._adjusting:
            self._drift_pending = (reason, task)
            return self.event(f'perception has drifted ({reason}); an adjustment is already running: re-calibrating '
                              'after it unless it puts a new model in service')
        self._adjusting = True
        since = self.hand_reading.drift_since
        wait = since + self.hand_reading.min_play - stamp
        if wait <= 0:
            self.executor.create_task(self.recalibrate(reason, since))
            return
        self.event(f'perception has drifted ({reason}) since {since:.1f} s: re-calibrating in {wait:.0f} s, on '
                   f'{self.hand_reading.min_play:g} s of play since then')
        timer = None

        def due() -> None:
            self.destroy_timer(timer)
            self.executor.create_task(self.recalibrate(reason, since))
        timer = self.create_timer(wait, due)

    async def recalibrate(self, reason: str, since: float) -> None:
        """Saves the raw play since `since` (s, the drift's start) and re-calibrates the encoder on it."""
        self._recalibrations += 1
        tag = time.strftime(f'%Y%m%d-%H%M%S-{os.getpid()}-e{self._recalibrations}')
        bag = self.work_dir / 'play' / f'drift-{tag}'
        bag.parent.mkdir(parents=True, exist_ok=True)
        try:
            saved = await self.call(self.save_play_client, SavePlay.Request(path=str(bag), since=sec_to_stamp(since)),
                                    'short_term_memory/save_play')
        except ValueError as exc:
            self.finish_adjustment(retry=False)
            return self.adjustment_failed(f'cannot save the recent play: {exc}')
        if not saved.success:
            self.finish_adjustment(retry=False)
            return self.adjustment_failed(f'saving the recent play failed: {saved.message}')
        self._training = self._trainer.submit(
            recalibrate_from_play, str(bag), resolve_checkpoint(self.world_model_checkpoint), self.work_dir, tag,
            self.encoder_tuning, self.keep_if_better, self._stopping)
        self.event(f're-calibrating the encoder on {saved.seconds:.0f} s of play from {bag} ({reason})')

    async def adjust_after_surprise(self, reason: str, task: str) -> None:
        """Saves the short-term memory and adjusts what `task` (the task the surprise happened in) adjusts; the
        task is fixed at the trigger because an episode may end, and the task turn idle, while the save runs."""
        # Named by time, process and trigger count: another run of the graph (its count starts again at 1) must
        # not overwrite the checkpoints this one installed.
        tag = time.strftime(f'%Y%m%d-%H%M%S-{os.getpid()}-{self.monitor.fired}')
        bag = self.work_dir / 'memory' / f'surprise-{tag}'
        bag.parent.mkdir(parents=True, exist_ok=True)
        try:
            saved = await self.call(self.save_client, SaveEpisodes.Request(path=str(bag)), 'short_term_memory/save')
        except ValueError as exc:
            return self.adjustment_failed(f'cannot save the short-term memory: {exc}')
        if not saved.success:
            return self.adjustment_failed(f'saving the short-term memory failed: {saved.message}')
        adjust = list(self.profiles[task].adjust)
        if not adjust:
            return self.event(f'saved the short-term memory to {bag}; adjusting nothing in task {task}')
        if self._adjusting:
            return self.event('an adjustment is already running; this trigger only saved the memory')
        self._adjusting = True
        self._training = self._trainer.submit(
            adjust_from_memory, str(bag), adjust, resolve_checkpoint(self.world_model_checkpoint), self.work_dir,
            tag, critic_init=self.critic_path or None, critic_tuning=self.critic_tuning, tuning=self.tuning,
            keep_if_better=self.keep_if_better, log=self.get_logger().warn)
        self.event(f'adjusting {adjust} on {saved.transitions} transitions from {bag} ({reason})')

    def check_training(self) -> None:
        if self._training is None or not self._training.done():
            return
        future, self._training = self._training, None
        try:
            result = future.result()
        except Exception as exc:  # any failure of the worker is reported, the node carries on
            self.finish_adjustment(retry=False)
            return self.adjustment_failed(f'adjustment failed: {exc}')
        self.executor.create_task(self.install_adjustment(result))

    async def install_adjustment(self, result: dict) -> None:
        try:
            await self._install(result)
        finally:
            self.finish_adjustment(retry=True)

    def finish_adjustment(self, retry: bool) -> None:
        """The adjustment in progress has ended. With `retry`, a drift reported meanwhile is re-calibrated now (a
        model the adjustment put in service cleared it); after a failure it is dropped, so that a failure that
        repeats does not repeat at once: the check's next firing starts again."""
        self._adjusting = False
        pending, self._drift_pending = self._drift_pending, None
        # A drift is tracked until a model is put in service or time restarts (the check forgets it then, too).
        if retry and pending is not None and math.isfinite(self.hand_reading.drift_since):
            self.start_recalibration(*pending, self.get_clock().now().nanoseconds * 1e-9)

    async def _install(self, result: dict) -> None:
        """The world model first (its node announces it; the actor loads it here, before a critic for its
        latents arrives), then the critic."""
        if 'encoder_kept' in result:
            self.counts['encoder_kept'] += 1
            self.adjustment_pub.publish(String(data=json.dumps({'kind': 'encoder', 'installed': False,
                                                                'reason': result['encoder_kept']})))
            self.event(f'encoder kept: {result["encoder_kept"]}')
        if 'encoder' in result:
            encoder = result['encoder']
            problem = await self.set_parameters('world_model', {'checkpoint': encoder['out']})
            if problem:
                return self.adjustment_failed(f're-calibrated world model {encoder["out"]} not installed: {problem}')
            self.counts['encoder_updates'] += 1
            self.follow_world_model(encoder['out'])
            self.adjustment_pub.publish(String(data=json.dumps({'kind': 'encoder', 'installed': True, **encoder})))
            self.event(f'encoder re-calibrated: {encoder}')
        model = result.get('world_model')
        if 'world_model_kept' in result:
            self.counts['world_model_kept'] += 1
            self.adjustment_pub.publish(String(data=json.dumps({'kind': 'world_model', 'installed': False,
                                                                'reason': result['world_model_kept']})))
            self.event(f'world model kept: {result["world_model_kept"]}')
        if model is not None:
            problem = await self.set_parameters('world_model', {'checkpoint': model['out']})
            if problem:
                return self.adjustment_failed(f'adjusted world model {model["out"]} not installed: {problem}')
            self.counts['world_model_updates'] += 1
            self.follow_world_model(model['out'])  # the next adjustment starts from it, announced yet or not
            self.adjustment_pub.publish(String(data=json.dumps({'kind': 'world_model', 'installed': True, **model})))
            self.event(f'world model adjusted: {model}')
        if 'critic_kept' in result:
            self.counts['critic_kept'] += 1
            self.adjustment_pub.publish(String(data=json.dumps({'kind': 'critic', 'installed': False,
                                                                'reason': result['critic_kept']})))
            self.event(f'critic kept: {result["critic_kept"]}')
        # A retrained critic, or the one in service saved again for the new world model's id.
        critic = result.get('critic') or result.get('critic_relabelled')
        if critic is None:
            return
        values = {'critic_path': critic['out'], **({'checkpoint': model['out']} if model is not None else {})}
        problems = [p for p in [await self.set_parameters(name, values) for name in self.targets] if p]
        if problems:
            return self.adjustment_failed(f'critic {critic["out"]} not installed: {"; ".join(problems)}')
        self.critic_path = critic['out']
        if 'critic' in result:
            self.counts['critic_updates'] += 1
            self.adjustment_pub.publish(String(data=json.dumps({'kind': 'critic', 'installed': True, **critic})))
            self.event(f'critic updated: {critic}')
        else:
            self.event(f'the critic in service follows the new world model: {critic}')

    def adjustment_failed(self, text: str) -> None:
        self.counts['adjustment_failures'] += 1
        self.last_event = text
        self.get_logger().error(text)

    def event(self, text: str) -> None:
        self.last_event = text
        self.get_logger().info(text)

    def publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: task', hardware_id='agent', level=DiagnosticStatus.OK,
                                  message=self.last_event or f'task {self.task}')
        values = {'task': self.task, 'mode': self.mode, 'surprise_baseline': f'{self.monitor.baseline:.4g}',
                  'surprise_model': 'none: unreadable checkpoint' if self.monitor.model_id is None
                  else self.monitor.model_id,
                  'surprise_streak': self.monitor.streak,
                  'surprising_steps': self.monitor.surprising, 'surprise_observed': self.monitor.observed,
                  'hand_reading_windows': self.hand_reading.counted,
                  'hand_reading_median_cm': f'{self.hand_reading.last_median * 100:.2f}',
                  'hand_reading_highest_median_cm': f'{self.hand_reading.highest_median * 100:.2f}',
                  'surprise_of_other_models': self.monitor.other_model,
                  'critic_path': self.critic_path, **self.counts}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(msg)

    def close(self) -> None:
        self._stopping.set()
        self._trainer.shutdown(wait=False, cancel_futures=True)


def main(args=None) -> int:
    return run_node(ConfiguratorNode, args)
