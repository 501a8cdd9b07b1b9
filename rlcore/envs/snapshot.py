"""Capture and restore the full state of gymnasium environments, for bit-for-bit resume.

Pickling a gymnasium environment rebuilds it from its constructor arguments (``EzPickle``) and
loses the simulator state, so a checkpoint instead records, for every layer of the wrapper stack,
the plain attributes (counters, RNGs, classic-control state arrays), and for MuJoCo environments
the complete integration state from ``mujoco.mj_getState``.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym

# Attributes that describe the environment rather than its state, or cannot be copied.
_SKIP = {"env", "model", "data", "mujoco_renderer", "renderer", "viewer", "spec", "_ezpickle_args",
         "_ezpickle_kwargs", "observation_space", "action_space", "metadata", "render_mode", "screen",
         "clock", "_cached_spec"}


def _layers(env: gym.Env) -> list[Any]:
    layers = [env]
    while hasattr(layers[-1], "env"):
        layers.append(layers[-1].env)
    return layers


def capture(env: gym.Env) -> list[dict[str, Any]]:
    """The state of ``env`` and of every wrapper around it, as a picklable list."""
    state = []
    for layer in _layers(env):
        fields = {}
        for key, value in vars(layer).items():
            if key in _SKIP or callable(value):
                continue
            try:
                fields[key] = copy.deepcopy(value)
            except Exception:
                continue
        if hasattr(layer, "model") and hasattr(layer, "data") and layer is env.unwrapped:
            import mujoco

            spec = mujoco.mjtState.mjSTATE_INTEGRATION
            buffer = __import__("numpy").empty(mujoco.mj_stateSize(layer.model, spec))
            mujoco.mj_getState(layer.model, layer.data, buffer, spec)
            fields["__mujoco_state__"] = buffer
        state.append(fields)
    return state


def restore(env: gym.Env, state: list[dict[str, Any]]) -> None:
    """Put ``env`` back in the state recorded by :func:`capture` (same wrapper stack required)."""
    layers = _layers(env)
    if len(layers) != len(state):
        raise ValueError(f"cannot restore an environment state recorded with {len(state)} wrapper layers "
                         f"into an environment with {len(layers)}.")
    for layer, fields in zip(layers, state, strict=True):
        fields = dict(fields)
        mujoco_state = fields.pop("__mujoco_state__", None)
        for key, value in fields.items():
            setattr(layer, key, copy.deepcopy(value))
        if mujoco_state is not None:
            import mujoco

            mujoco.mj_setState(layer.model, layer.data, mujoco_state, mujoco.mjtState.mjSTATE_INTEGRATION)
            mujoco.mj_forward(layer.model, layer.data)
