"""ROS-free perception core: the world model's encoder applied to camera images, with input checks, and the
perception node's settings.

Usable from a notebook: `ImageEncoder().encode(rgb)` gives the latent of one (H, W, 3) uint8 image with the
shipped checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_FINGER_JOINTS
from jepa_common.settings import check_spans, setting
from jepa_world_model.model import resize_rgb
from jepa_world_model.runtime import LoadedModel, check_device_name


@dataclass
class PerceptionConfig:
    """The perception node's parameters (its frame check's are FrameCheckConfig's, under `frame_check.`). Only
    `checkpoint` is applied while the node runs."""
    checkpoint: str = setting(
        '', "world-model checkpoint whose encoder is used ('' = the shipped default); setting it loads that "
            'checkpoint, or is refused and the current model kept', live=True)
    device: str = setting('auto', 'torch device: auto (the GPU when there is one), cpu, cuda or cuda:N')
    torch_threads: int = setting(1, 'intra-op torch threads (0 = one per core); the nodes share the cores', (0, 256))
    follow_model_version: bool = setting(True, 'load each checkpoint world_model/model_version announces')
    image_queue_depth: int = setting(
        2, 'camera frames queued while one is encoded: a short queue keeps the newest when encoding falls behind',
        (1, 1000))
    image_reliable: bool = setting(
        False, 'subscribe to the camera reliably; false (best effort) matches both kinds of camera publisher')
    # The arm graph's names for the arm (every node of it reads them): perception reads these joints from
    # joint_states, arm then fingers, the order of the proprioception input of checkpoints that encode joint
    # positions; their motion also tells a frozen camera from a still scene.
    arm_joints: list[str] = setting(list(PANDA_ARM_JOINTS), 'arm joints perception reads from joint_states')
    finger_joints: list[str] = setting(list(PANDA_FINGER_JOINTS),
                                       'gripper joints perception reads after the arm joints; may be empty')
    joint_state_timeout: float = setting(
        0.1, 's: the joint state stamped nearest a camera frame counts as the arm at that frame only this close',
        (0.001, 10.0))
    diagnostics_period: float = setting(5.0, 's between latency reports (log and /diagnostics)', (0.1, 3600.0))
    refusal_log_period: float = setting(
        5.0, 's between log lines about refused camera frames, per kind', (0.0, 3600.0))

    def __post_init__(self):
        check_spans(self)
        check_device_name(self.device)
        if not self.arm_joints:
            raise ValueError('arm_joints must name at least one joint')

    @property
    def proprio_joints(self) -> list[str]:
        return [*self.arm_joints, *self.finger_joints]


class ImageEncoder(LoadedModel):
    """A loaded world-model checkpoint used as image -> latent encoder."""

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def uses_proprio(self) -> bool:
        return bool(self.model.config.use_proprio)

    def prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """Validate an (H, W, 3) uint8 image and resize it to the encoder's input (with the same resize
        as the training datasets); returns (image, whether it was resized)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f'expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}')
        size = self.image_size
        if rgb.shape[:2] == (size, size):
            return rgb, False
        return resize_rgb(np.ascontiguousarray(rgb), size), True

    @torch.inference_mode()
    def encode_batch(self, images: np.ndarray, proprio: np.ndarray | None = None) -> np.ndarray:
        """(B, S, S, 3) uint8 [+ (B, proprio_dim) joint positions for models that use them] -> (B, D) float32."""
        if self.uses_proprio and proprio is None:
            raise ValueError('this checkpoint encodes joint positions too and none are known for this image')
        latents = self.model.encode(images, proprio if self.uses_proprio else None).float().cpu().numpy()
        if not np.all(np.isfinite(latents)):
            raise ValueError('encoder produced NaN or inf latents')
        return latents

    def encode(self, rgb: np.ndarray, proprio: np.ndarray | None = None) -> np.ndarray:
        """One (H, W, 3) uint8 image of any size -> (D,) float32 latent."""
        image, _ = self.prepare(rgb)
        return self.encode_batch(image[None], None if proprio is None else np.asarray(proprio)[None])[0]
