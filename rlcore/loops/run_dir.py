"""Run directories: the resolved config, TensorBoard event files, evaluations and checkpoints.

Layout of ``runs/<algo>-<env>-s<seed>-<time>/``::

    config.json          the resolved configuration (what --resume reads back)
    events.out.tfevents.* TensorBoard scalars (tensorboard --logdir runs)
    evaluations.jsonl    one line per evaluation: step, mean/std return, per-episode returns and metrics
    checkpoint.pt        the latest checkpoint (networks, optimisers, replay, RNG states, env state)
    checkpoint.prev.pt   the one before it, the fallback when the latest is damaged
    summary.json         written at the end: final evaluation, wall time, steps per second
    .lock                held by the process that trains in the directory (see RunDirLock)

A directory that holds any of ``config.json``, a checkpoint or ``evaluations.jsonl`` holds a run: a new run
refuses it (:func:`check_new_run_dir`), so nothing of an earlier run is overwritten or appended to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import time
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.utils.tensorboard import SummaryWriter

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


RUN_FILES = ("config.json", "checkpoint.pt", "checkpoint.prev.pt", "evaluations.jsonl")
"""The files whose presence means a directory holds a run."""
_ENV_FIELDS = ("env", "action_bound", "action_set", "vectorization", "backend")


def config_from_dict(config_cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from :func:`config_to_dict` output (nested configs too, JSON lists back to
    tuples). A ``config.json`` of rlcore 0.1, whose environment fields were flat, is read as well."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    values = dict(values)
    env_field = fields.get("env")
    if env_field is not None and not isinstance(values.get("env", {}), dict):
        values["env"] = {"id": values.pop("env"), **{k: values.pop(k) for k in _ENV_FIELDS[1:] if k in values}}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"config has fields {unknown} that {config_cls.__name__} does not know.")
    kwargs = {}
    hints = typing.get_type_hints(config_cls)
    for name, value in values.items():
        nested = _dataclass_type(hints.get(name))
        if nested is not None and isinstance(value, dict):
            kwargs[name] = config_from_dict(nested, value)
            continue
        origin = typing.get_origin(fields[name].type) if not isinstance(fields[name].type, str) else None
        is_tuple = origin is tuple or isinstance(fields[name].default, tuple) or (
            isinstance(fields[name].type, str) and fields[name].type.startswith("tuple"))
        kwargs[name] = tuple(value) if is_tuple and isinstance(value, list) else value
    return config_cls(**kwargs)


def _dataclass_type(hint: Any) -> type | None:
    """The dataclass in a type hint (``EnvConfig`` or ``Annotated[EnvConfig, ...]``), else None."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def holds_run(path: str | Path) -> bool:
    """Whether ``path`` holds (part of) a run: a config, a checkpoint or evaluations."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


def check_new_run_dir(path: str | Path) -> None:
    """Refuse a directory that already holds a run, naming the two ways on; nothing on disk changes."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"run directory {path} exists and is not a directory; choose another --run-dir.")
    if holds_run(path):
        raise ValueError(f"{path} already holds a run; continue it with `--resume {path}`, or give a new "
                         "--run-dir (or none, for a fresh directory under --log-root). Nothing was changed.")


class RunDirInUse(RuntimeError):
    """Another process is training in the run directory."""


class RunDirLock:
    """An exclusive lock on a run directory while a process trains in it.

    Two processes training in one directory (a resumed run started again while an orphaned worker still runs
    it, say) would overwrite each other's checkpoints and interleave their evaluations. The lock is an
    ``flock`` on ``<run_dir>/.lock``, which the operating system releases when its process ends, however it
    ends, so a crashed run leaves no stale lock; the file itself stays. Where ``fcntl`` does not exist
    (Windows) the lock does nothing.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._handle: Any = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> None:
        """Take the lock (the directory must exist), or raise :class:`RunDirInUse` naming the holder."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        if self.held:
            return
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the session
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunDirInUse(f"{self.path.parent} is in use by another training process (pid {holder}); let it "
                              "finish or stop it, then resume. Two processes in one run directory would overwrite "
                              "each other's checkpoints.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the flock
            self._handle = None


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path | None) -> Iterator[None]:
    """Hold :class:`RunDirLock` on ``run_dir`` (created if missing) for the block; ``None``: no lock.

    A directory that the block created and left holding nothing but the lock file is removed again, so a call
    refused for bad input leaves nothing on disk."""
    if run_dir is None:
        yield
        return
    path = Path(run_dir)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock = RunDirLock(path)
    try:
        lock.acquire()
        yield
    finally:
        lock.release()
        if created and {child.name for child in path.iterdir()} <= {lock.path.name}:
            lock.path.unlink(missing_ok=True)
            path.rmdir()


def locks_run_dir(function: Callable[..., T]) -> Callable[..., T]:
    """Decorate a training function with a ``run_dir`` argument: the directory is locked while it runs
    (:func:`run_dir_lock`; ``run_dir=None``: no lock)."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def locked(*args: Any, **kwargs: Any) -> T:
        with run_dir_lock(signature.bind(*args, **kwargs).arguments.get("run_dir")):
            return function(*args, **kwargs)

    return locked


def new_run_dir_path(root: str | Path, algo: str, env_id: str, seed: int) -> Path:
    """A fresh ``<root>/<algo>-<env>-s<seed>-<time>[-k]`` path that does not exist yet (not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{algo}-{env_id}-s{seed}-{stamp}".replace("/", "_")
    path, suffix = Path(root) / name, 1
    while path.exists():
        suffix += 1
        path = Path(root) / f"{name}-{suffix}"
    return path


def save_config(run_dir: Path, algo: str, config: Any, extra: dict[str, Any] | None = None) -> None:
    """Write ``config.json`` (atomically): the algorithm's name, the config (a dataclass) and ``extra``
    entries (how the environment was given)."""
    payload = {"algo": algo, "config": config_to_dict(config), **(extra or {})}
    tmp = run_dir / "config.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(run_dir / "config.json")


def save_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` (atomically: a temporary file renamed into place)."""
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(run_dir / "summary.json")


def load_config(run_dir: str | Path) -> tuple[str, dict[str, Any]]:
    """``(algo, config_dict)`` from a run directory."""
    payload = load_run_record(run_dir)
    return payload["algo"], payload["config"]


def load_run_record(run_dir: str | Path) -> dict[str, Any]:
    """The whole ``config.json`` of a run: algo, config, and how its environment was given."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json).")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is damaged ({error}); the run's settings are also in its checkpoint "
                         "(torch.load(..., weights_only=False)['config']).") from None
    if not isinstance(payload, dict) or "algo" not in payload or "config" not in payload:
        raise ValueError(f"{path} is not an rlcore run's config (it has no 'algo' and 'config').")
    return payload


class RunLogger:
    """Writes scalars to TensorBoard and evaluations to ``evaluations.jsonl``.

    Metrics are accumulated as tensors and only turned into Python numbers in :meth:`flush`, so
    training steps never wait for the device.
    """

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        self.run_dir = run_dir
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._masked_sums: dict[str, torch.Tensor] = {}
        self._masked_counts: dict[str, torch.Tensor] = {}

    def accumulate(self, metrics: dict[str, torch.Tensor | float]) -> None:
        for key, value in metrics.items():
            value = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self._sums[key] = self._sums[key] + value if key in self._sums else value.clone()
            self._counts[key] = self._counts.get(key, 0) + 1

    def accumulate_masked(self, metrics: dict[str, torch.Tensor], mask: torch.Tensor) -> None:
        """Add the rows of each ``[N]`` tensor where ``mask`` is true (e.g. returns of episodes that just
        ended); the count stays a tensor too, so nothing waits for the device."""
        weight = mask.to(torch.float32)
        for key, value in metrics.items():
            total = (value.detach().float() * weight).sum()
            self._masked_sums[key] = self._masked_sums[key] + total if key in self._masked_sums else total
            self._masked_counts[key] = (self._masked_counts[key] + weight.sum() if key in self._masked_counts
                                        else weight.sum())

    def flush(self, step: int, prefix: str = "train/") -> dict[str, float]:
        """Write the means of everything accumulated since the last flush."""
        means = {key: float(total) / self._counts[key] for key, total in self._sums.items()}
        for key, total in self._masked_sums.items():
            count = float(self._masked_counts[key])
            if count > 0:
                means[key] = float(total) / count
        for key, value in means.items():
            self.writer.add_scalar(prefix + key, value, step)
        for store in (self._sums, self._counts, self._masked_sums, self._masked_counts):
            store.clear()
        return means

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def evaluation(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "evaluations.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.writer.add_scalar("eval/return_mean", record["return_mean"], record["step"])
        self.writer.add_scalar("eval/return_std", record["return_std"], record["step"])
        for name, value in record.get("metrics", {}).items():
            self.writer.add_scalar(f"eval/{name}", value, record["step"])
        if "q_mean" in record:
            self.writer.add_scalar("eval/q_mean", record["q_mean"], record["step"])

    def layout_q_against_return(self) -> None:
        """One TensorBoard chart (Custom Scalars tab) of the critic's mean Q against the evaluation return."""
        self.writer.add_custom_scalars({"critic": {"q_mean vs eval return": [
            "Multiline", ["eval/q_mean", "eval/return_mean"]]}})

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def check_resume_config(run_dir: str | Path, saved: dict[str, Any] | None, config: Any,
                        may_change: Iterable[str]) -> None:
    """Refuse to resume the run in ``run_dir``, saved with config ``saved`` (a dict), with a ``config`` (a
    dataclass) that differs from it in a field outside ``may_change`` (names, nested ones dotted: ``"steps"``,
    ``"ppo.iterations"``), naming each field, both values and the fix. ``saved=None`` (an old checkpoint
    without its config) and fields that ``saved`` lacks (added since) are not checked."""
    if saved is None:
        return
    allowed = set(may_change)
    given = _flat(json.loads(json.dumps(dataclasses.asdict(config), default=str)))
    saved = _flat(json.loads(json.dumps(saved, default=str)))
    changed = [name for name in saved if name in given and given[name] != saved[name]
               and not any(".".join(name.split(".")[:depth]) in allowed for depth in range(1, name.count(".") + 2))]
    if changed:
        details = "; ".join(f"{name} {saved[name]!r} (given {given[name]!r})" for name in changed)
        shown = ", ".join(sorted(allowed - {"resume", "run_dir", "log_root"}))
        raise ValueError(f"{run_dir} was trained with {details}. A resumed run keeps its task, seed and "
                         f"hyper-parameters (only {shown} may change): drop those settings to continue it, or "
                         "start a new run with them. Nothing was changed.")


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = value
    return flat


def read_evaluations(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``evaluations.jsonl`` (none if there is no such file). The file is appended to as a run
    goes, so a process killed mid-write can leave its last line torn: that line is dropped with a warning (an
    evaluation is written before its step's checkpoint, so a resumed run writes it again); a damaged line before
    it is an error naming the file and the line."""
    path = Path(run_dir) / "evaluations.jsonl"
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number < len(lines):
                raise ValueError(f"{path} line {number} is not a JSON record ({error}); restore the file or delete "
                                 "that line.") from None
            warnings.warn(f"{path}: its last line is torn (the process was stopped while writing it); it is "
                          "left out.", RuntimeWarning, stacklevel=2)
    return records


def write_evaluations(run_dir: str | Path, records: list[dict[str, Any]]) -> None:
    """Replace ``evaluations.jsonl`` with ``records`` (atomically): a resume drops the evaluations after its
    checkpoint's step, which the resumed run writes again."""
    path = Path(run_dir) / "evaluations.jsonl"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(record) + "\n" for record in records))
    tmp.replace(path)


__all__ = ["RUN_FILES", "RunLogger", "check_new_run_dir", "check_resume_config", "config_from_dict", "config_to_dict",
           "holds_run", "load_config", "load_run_record", "new_run_dir_path", "read_evaluations", "save_config",
           "write_evaluations"]
