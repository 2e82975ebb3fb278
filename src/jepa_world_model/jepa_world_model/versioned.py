"""Versioned checkpoints of the learned modules that work in a world model's latent space (the higher-level model,
the critic, the reactive policy): a dict with its `kind` and `format_version`, read back only by code of that
kind and format, each refusal a caller's own error class naming the file and what was wrong.
"""
from __future__ import annotations

import torch


def read_versioned(path, kind: str, format_version: int, error: type[Exception], what: str, hint: str = '',
                   keys: tuple[str, ...] = ()) -> dict:
    """The checkpoint dict at path, of `kind` and `format_version` and holding `keys`; else error(message).

    what names the module in messages ('critic'); hint says how to make a usable one (appended to the format
    refusal: 'train it again with ...'). weights_only: a checkpoint is data (tensors, numbers, strings, lists,
    dicts), never code to run, so what is saved in one must be plain Python values, not numpy scalars.
    """
    try:
        blob = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for a missing, truncated or foreign file
        raise error(f'{path}: cannot read a {what} ({type(exc).__name__}: {exc})') from exc
    if not isinstance(blob, dict) or blob.get('kind') != kind:
        found = f'its kind is {blob.get("kind")!r}' if isinstance(blob, dict) else f'it holds a {type(blob).__name__}'
        raise error(f'{path}: not a {what} checkpoint ({found}, a {what} has kind {kind!r})')
    if blob.get('format_version') != format_version:
        raise error(f'{path}: {what} of format {blob.get("format_version")}, this code reads format {format_version}'
                    + (f': {hint}' if hint else ''))
    missing = [key for key in keys if key not in blob]
    if missing:
        raise error(f'{path}: {what} checkpoint lacks {missing} (keys present: {sorted(blob)})')
    return blob


def load_module(cls, path, kind: str, format_version: int, error: type[Exception], what: str,
                latent_dim: int | None = None, model_id: str | None = None, hint: str = ''):
    """cls(**checkpoint['config']) with its state_dict, in eval mode, from a checkpoint of a module that works in
    one model's latent space: its config holds that `latent_dim` and `model_id`. With latent_dim / model_id,
    refused (error) unless they match; a model_id empty on either side (not recorded) is not compared."""
    blob = read_versioned(path, kind, format_version, error, what, hint, keys=('config', 'state_dict'))
    config = blob['config']
    if latent_dim is not None and config.get('latent_dim') != latent_dim:
        raise error(f'{path}: {what} for latent_dim {config.get("latent_dim")}, the model has {latent_dim}')
    if model_id and config.get('model_id') and config['model_id'] != model_id:
        raise error(f'{path}: {what} trained on latents of {config["model_id"]!r}, not {model_id!r}')
    try:
        module = cls(**config)
        module.load_state_dict(blob['state_dict'])
    except (TypeError, ValueError, RuntimeError) as exc:  # a config or state_dict this code cannot build
        raise error(f'{path}: inconsistent {what} ({type(exc).__name__}: {exc})') from exc
    return module.eval()
