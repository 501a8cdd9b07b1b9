"""``solver_options`` on the command line: ints, floats, strings and bools for any solver.

Both forms give the same dict::

    rlcore train caql --solver scip --solver-options presolve=false time_limit=0.5 backend=scip
    rlcore train caql --solver scip --solver-options '{"presolve": false, "time_limit": 0.5}'

A ``KEY=VALUE`` value is read as JSON when it parses (``false``, ``3``, ``0.5``, ``"x"``), as a bool for
``True``/``False``, and as a string otherwise.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeAlias

import tyro

SolverOptionValue: TypeAlias = "int | float | str | bool"


def parse_solver_options(args: list[str]) -> dict[str, Any]:
    """The dict of ``KEY=VALUE`` arguments, or of one JSON object; a ``ValueError`` naming a bad argument."""
    if len(args) == 1 and args[0].lstrip().startswith("{"):
        try:
            options = json.loads(args[0])
        except json.JSONDecodeError as error:
            raise ValueError(f"--solver-options: {args[0]!r} is not a JSON object ({error}).") from None
        if not isinstance(options, dict):
            raise ValueError(f"--solver-options: expected a JSON object, got {args[0]!r}.")
        bad = {k: v for k, v in options.items() if not isinstance(v, (int, float, str, bool))}
        if bad:
            raise ValueError(f"--solver-options: values must be ints, floats, strings or bools, got {bad}.")
        return options
    options = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        if not sep or not key:
            raise ValueError(f"--solver-options: expected KEY=VALUE (or one JSON object), got {arg!r}; for "
                             "example presolve=false time_limit=0.5.")
        options[key] = _value(raw)
    return options


def _value(raw: str) -> int | float | str | bool:
    if raw in ("True", "False"):
        return raw == "True"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return value if isinstance(value, (int, float, str, bool)) else raw


def _to_args(options: dict[str, Any]) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in options.items()]


SolverOptions = Annotated[
    dict[str, Any],
    tyro.constructors.PrimitiveConstructorSpec(
        nargs="*", metavar="KEY=VALUE|JSON", instance_from_str=parse_solver_options,
        is_instance=lambda value: isinstance(value, dict), str_from_instance=_to_args),
]
"""The ``solver_options`` field type: a dict in Python, ``KEY=VALUE ...`` or JSON on the command line."""
