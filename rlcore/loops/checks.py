"""Checks the configs share, so that every bad value is refused with the same kind of message."""

from __future__ import annotations


def require_at_least(config: object, minimum: int, *names: str) -> None:
    """A ValueError naming the first field of ``names`` whose value on ``config`` is below ``minimum``."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}.")
