"""ROS-free perception core: the world model's encoder applied to camera images, with input checks.

Usable from a notebook: `ImageEncoder().encode(rgb)` gives the latent of one (H, W, 3) uint8 image with the
shipped checkpoint.
"""
from __future__ import annotations

import numpy as np
import torch
from jepa_world_model.model import resize_rgb
from jepa_world_model.runtime import LoadedModel


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
            raise ValueError('this checkpoint encodes joint positions too and none have arrived yet')
        latents = self.model.encode(images, proprio if self.uses_proprio else None).float().cpu().numpy()
        if not np.all(np.isfinite(latents)):
            raise ValueError('encoder produced NaN or inf latents')
        return latents

    def encode(self, rgb: np.ndarray, proprio: np.ndarray | None = None) -> np.ndarray:
        """One (H, W, 3) uint8 image of any size -> (D,) float32 latent."""
        image, _ = self.prepare(rgb)
        return self.encode_batch(image[None], None if proprio is None else np.asarray(proprio)[None])[0]
