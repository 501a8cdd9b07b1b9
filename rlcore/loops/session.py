"""What every training loop shares: the common settings and one run's session.

A :class:`RunSession` owns everything around the algorithm-specific loop: validating the config, the
environments (built from :class:`EnvConfig`, or given as objects), the run directory (new, or the one
being resumed), seeding, TensorBoard, the evaluation protocol, checkpoints, the progress bar and the
summary. The off-policy loop (:mod:`rlcore.loops.off_policy`) and the on-policy loop
(:mod:`rlcore.loops.on_policy`) keep only what differs: how they collect data and when they update.

Nothing is written before the whole config is validated, the environments are built and the agent is
made: a bad config or an environment the algorithm cannot use leaves no run directory behind, and a
directory that already holds a run is refused (continue it with ``--resume``).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro
from tqdm.auto import tqdm

from rlcore import envs
from rlcore.distributed.config import DistributedConfig, check_resumable
from rlcore.loops.checkpoint import (
    CHECKPOINT,
    global_rng_state,
    has_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
    seed_everything,
    set_global_rng_state,
)
from rlcore.loops.checks import require_at_least
from rlcore.loops.evaluation import evaluate_episodes, summarize
from rlcore.loops.run_dir import (
    RunDirInUse,
    RunDirLock,
    RunLogger,
    check_new_run_dir,
    check_resume_config,
    holds_run,
    load_run_record,
    new_run_dir_path,
    read_evaluations,
    save_config,
    save_summary,
    write_evaluations,
)
from rlcore.objectives import validate_args
from solvers import ActionSet

EnvFactory = Callable[[int], envs.BatchedEnv]
"""``seed -> BatchedEnv``: builds a fresh environment (the evaluation copies are built this way)."""
EnvSource = envs.BatchedEnv | EnvFactory


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a torch device that this machine has, or a ValueError naming it and the ones available."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {name!r}.") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ValueError(f"device {name!r} is not available here ({found} CUDA device(s) visible to this torch "
                         f"{torch.__version__}); use --device cpu, or a device index below {max(found, 1)}.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} is not available here (no MPS backend); use --device cpu.")
    return device


@dataclass
class EnvConfig:
    """How ``rlcore train`` builds environments with `rlcore.envs.make` (unused when ``train`` is given
    ``env=...``). On the command line these are ``--env``, ``--action-bound``, ``--action-set``,
    ``--vectorization`` and ``--backend``."""

    id: Annotated[str, tyro.conf.arg(name="env")] = "Pendulum-v1"
    """Environment id: any gymnasium id with a Box or Discrete action space, or a torch-backend id."""
    action_bound: float | None = None
    """Constrain actions to a set of this size (a box [-c, c]^d, or a ball of radius c; see action_set)."""
    action_set: Literal["box", "l2_ball", "l1_ball"] = "box"
    """Shape of the constraint that action_bound sets."""
    vectorization: Literal["sync", "async"] = "sync"
    """Gymnasium vector env type. Training needs 'sync': every run checkpoints, and 'async' environments (one
    process each) cannot be checkpointed; 'async' is for rollouts through envs.make."""
    backend: str = "gymnasium"
    """Environment backend: 'gymnasium', 'torch' (tensor envs on `device`), 'mjwarp' or 'auto' (see envs.make)."""

    def validate(self) -> None:
        if self.action_bound is not None and not self.action_bound > 0:
            raise ValueError(f"action_bound must be > 0, got {self.action_bound}.")
        if self.action_set != "box" and self.action_bound is None:
            raise ValueError(f"action_set={self.action_set!r} needs action_bound, the ball's radius "
                             f"(`--action-set {self.action_set} --action-bound 0.5`); without it actions keep the "
                             "task's native box.")
        if self.backend not in envs.BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(envs.BACKENDS)}; got {self.backend!r}.")

    def make_action_set(self) -> ActionSet | None:
        if self.action_bound is None:
            return None
        c = float(self.action_bound)
        if self.action_set == "box":
            return ActionSet.box(-c, c)
        return getattr(ActionSet, self.action_set)(0.0, c)

    def make(self, num_envs: int, device: str | torch.device = "cpu") -> envs.BatchedEnv:
        """``num_envs`` copies of the task on ``device``."""
        return envs.make(self.id, num_envs=num_envs, device=device, action_set=self.make_action_set(),
                         vectorization=self.vectorization if num_envs > 1 else "sync", backend=self.backend)


@dataclass
class RunConfig:
    """Settings shared by every algorithm: the task, the budget, evaluation, checkpoints, where logs go."""

    env: Annotated[EnvConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=EnvConfig)
    """The environment (a str is read as EnvConfig(id=...))."""
    num_envs: int = 1
    """Parallel training environments."""
    total_steps: int = 15_000
    """Environment steps to train for (summed over parallel environments)."""
    eval_interval: int = 2_500
    """Evaluate every this many environment steps (and at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation (deterministic policy, separate environments)."""
    checkpoint_interval: int = 5_000
    """Write a checkpoint every this many environment steps (and at the end)."""
    seed: int = 1
    """Seed for networks, environments, sampling and exploration (Python's random, NumPy and torch too)."""
    device: str = "cpu"
    """Torch device for networks, storage and environment outputs."""
    torch_threads: int = 1
    """torch.set_num_threads; one is fastest for small networks (and for parallel seeds)."""
    log_root: str = "runs"
    """Parent folder of new run directories."""
    run_dir: str | None = None
    """Use this run directory instead of a new one under log_root (it must not hold a run yet)."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint (run_dir is then ignored)."""
    progress: bool = True
    """Show a progress bar."""
    distributed: Annotated[DistributedConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=DistributedConfig)
    """Rollout actors on Ray (``--workers N``; see `rlcore.distributed`); by default none."""

    def __post_init__(self) -> None:
        if isinstance(self.env, str):
            self.env = EnvConfig(id=self.env)

    def validate(self) -> None:
        require_at_least(self, 1, "total_steps", "eval_interval", "eval_episodes", "checkpoint_interval", "num_envs",
                         "torch_threads")
        check_device(self.device)
        if not isinstance(self.env, EnvConfig):
            raise ValueError(f"env must be an EnvConfig or an environment id, got {type(self.env).__name__}; pass "
                             "environment objects to train(config, env=...) instead.")
        self.env.validate()
        if self.env.vectorization == "async" and self.num_envs > 1:
            raise ValueError("vectorization='async' cannot train: every run writes checkpoints, and async vector "
                             "environments (one process each) cannot be checkpointed. Use vectorization='sync' (the "
                             "default), or backend='torch' or 'mjwarp' for many environments at once.")
        self.distributed.validate()


@dataclass
class TrainResult:
    """What every ``train`` function returns."""

    agent: Any
    run_dir: Path
    evaluations: list[dict[str, Any]]
    """One record per evaluation: step, return_mean, return_std, returns, metrics, seeds, wall_seconds (of the
    run so far, summed over the sessions of a resumed run), train_seconds (wall seconds less those spent in
    evaluations)."""

    @property
    def final_return(self) -> float:
        return self.evaluations[-1]["return_mean"] if self.evaluations else float("nan")


RESUME_MAY_CHANGE = frozenset({"total_steps", "eval_interval", "eval_episodes", "checkpoint_interval",
                               "log_interval", "device", "torch_threads", "log_root", "run_dir", "resume",
                               "progress"})
"""The config fields a resumed run may change: its budget, the schedule of its evaluations, checkpoints and logs,
and where it runs. Everything else (the task, the seed, the networks, every hyper-parameter) is the run's own:
changing it would make the resumed run a different experiment, or fail to load its checkpoint."""


def make_env(config: RunConfig, num_envs: int) -> envs.BatchedEnv:
    """``num_envs`` copies of ``config.env`` on ``config.device``."""
    return config.env.make(num_envs, config.device)


def crossed(before: int, after: int, interval: int) -> bool:
    """Whether a multiple of ``interval`` lies in ``(before, after]``."""
    return after // interval > before // interval


def env_label(env: Any) -> str:
    return str(getattr(env, "env_id", type(env).__name__))


def is_env(source: Any) -> bool:
    """Whether ``source`` is an environment object (not a factory ``seed -> BatchedEnv``)."""
    return all(hasattr(source, name) for name in ("reset", "step", "num_envs"))


class RunSession:
    """One training run's environments, directory, logger, evaluations, checkpoints and progress bar.

    Construction validates the config, finds the checkpoint when resuming (the newest one that loads), seeds
    the global generators and builds ``env`` and ``eval_env``, writing nothing. The loop then builds its
    agent and storage and calls :meth:`start`, which creates the run directory (or reopens the resumed one)
    and restores the checkpoint; it reports progress through :meth:`advance` and ends with :meth:`finish`.

    Args:
        algo: the algorithm's registered name (run directory name, checkpoint, summary).
        config: the run's config.
        env: the training environment, or a factory ``seed -> BatchedEnv``; None builds ``config.env``.
        eval_env: the evaluation environment, or a factory ``seed -> BatchedEnv``; None builds it like ``env``
            (required when ``env`` is an object: an environment in use cannot be copied).
    """

    def __init__(self, algo: str, config: RunConfig, env: EnvSource | None = None,
                 eval_env: EnvSource | None = None) -> None:
        config.validate()
        torch.set_num_threads(config.torch_threads)
        self.algo, self.config = algo, config
        self.eval_seed = config.seed + 1_000_003
        self.checkpoint: dict[str, Any] | None = None
        if config.resume:
            self.run_dir = Path(config.resume)
            if not holds_run(self.run_dir):
                raise ValueError(f"{self.run_dir} holds no run to resume (no config.json or checkpoint).")
            record = load_run_record(self.run_dir) if (self.run_dir / "config.json").is_file() else {}
            if env is None and record.get("env_from_config") is False:
                raise ValueError(f"{self.run_dir} was trained on an environment object "
                                 f"({record.get('env_description')}); resume it from Python with "
                                 "train(config, env=..., eval_env=...) and the same environments.")
            if has_checkpoint(self.run_dir):
                self.checkpoint = load_latest_checkpoint(self.run_dir, map_location=config.device)
                check_resume_config(self.run_dir, self.checkpoint.get("config"), config, RESUME_MAY_CHANGE)
            else:  # stopped before its first checkpoint: nothing to continue, so it starts again, in place
                warnings.warn(f"{self.run_dir} has no checkpoint yet (the run stopped before its first one); it "
                              "starts again from step 0 in the same directory.", RuntimeWarning, stacklevel=2)
        else:
            label = env_label(env) if env is not None and is_env(env) else config.env.id
            self.run_dir = (Path(config.run_dir) if config.run_dir
                            else new_run_dir_path(config.log_root, algo, label, config.seed))
            check_new_run_dir(self.run_dir)
        self.lock = RunDirLock(self.run_dir)  # a new run's in start(), once its directory exists
        seed_everything(config.seed)
        self.env_from_config = env is None
        self.env, self.eval_env = self._build_envs(env, eval_env)
        self.env_id = config.env.id if self.env_from_config else env_label(self.env)
        self.step = self.checkpoint["step"] if self.checkpoint is not None else 0
        self.evaluations: list[dict[str, Any]] = []
        self.logger: RunLogger | None = None
        self.bar: tqdm | None = None
        if config.resume:
            try:
                self.lock.acquire()
            except RunDirInUse:
                self.close()
                raise

    def _build_envs(self, env: EnvSource | None, eval_env: EnvSource | None) -> tuple[envs.BatchedEnv, envs.BatchedEnv]:
        config = self.config
        if env is None:
            if eval_env is not None:
                raise ValueError("eval_env is given without env; pass both, or neither to build them from config.env.")
            return make_env(config, config.num_envs), make_env(config, config.eval_episodes)
        if is_env(env):
            train_env = env
            if eval_env is None:
                raise ValueError("train(config, env=<an environment>) also needs eval_env=...: an environment or a "
                                 "factory seed -> BatchedEnv for the evaluation copies (or pass env as a factory).")
        elif callable(env):
            train_env = env(config.seed)
            eval_env = env if eval_env is None else eval_env
        else:
            raise ValueError(f"env must be a BatchedEnv or a factory seed -> BatchedEnv, got {type(env).__name__}.")
        built_eval = eval_env if is_env(eval_env) else eval_env(self.eval_seed)
        for name, built in (("env", train_env), ("eval_env", built_eval)):
            if not is_env(built):
                raise ValueError(f"{name} did not give a BatchedEnv (got {type(built).__name__}).")
        if built_eval is train_env:
            raise ValueError("eval_env must be a separate environment: evaluating in the training environment "
                             "would cut its episodes short.")
        return train_env, built_eval

    # ------------------------------------------------------------------ start
    def start(self, agent: Any) -> dict[str, Any] | None:
        """Create (or reopen) the run directory, then restore the agent, the environment's state and the global
        RNGs from the checkpoint (after the agent was built, so that its initialisation does not consume the
        restored RNGs). Returns the checkpoint, whose other parts (replay, loop state) the loop restores, or
        None for a new run."""
        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        if self.checkpoint is not None:  # restored before anything is written: a failure leaves the run as it was
            agent.load_state_dict(self.checkpoint["agent"])
            self.env.load_state_dict(self.checkpoint["env"])
        save_config(self.run_dir, self.algo, config, extra=self._env_record())
        if config.resume:
            # Evaluations after the checkpoint's step are written again by the resumed run (all of them, by a run
            # that starts again for want of a checkpoint).
            self.evaluations = [e for e in read_evaluations(self.run_dir) if e["step"] <= self.step]
            write_evaluations(self.run_dir, self.evaluations)
        self.logger = RunLogger(self.run_dir, purge_step=self.step if config.resume else None)
        # The run's clocks continue from the checkpoint, so that a resumed run's evaluations give its seconds of
        # training so far (the work lost after the last checkpoint is not counted); older checkpoints have none.
        clock = (self.checkpoint or {}).get("clock", {"wall_seconds": 0.0, "eval_seconds": 0.0})
        self.session_start, self.start_step = time.perf_counter(), self.step
        self.start_time = self.session_start - clock["wall_seconds"]
        self.eval_seconds = clock["eval_seconds"]
        self.bar = tqdm(total=config.total_steps, initial=self.step, disable=not config.progress, unit="step",
                        desc=f"{self.algo} {self.env_id}", dynamic_ncols=True)
        if self.checkpoint is None:
            return None
        set_global_rng_state(self.checkpoint["rng"])
        return self.checkpoint

    def _env_record(self) -> dict[str, Any]:
        if self.env_from_config:
            return {"env_from_config": True}
        return {"env_from_config": False, "env_description": repr(self.env)}

    # ------------------------------------------------------------------ during the run
    def evaluate(self, agent: Any, extra: Callable[[], dict[str, float]] | None = None) -> None:
        """The evaluation protocol: deterministic policy, ``eval_episodes`` whole episodes on ``eval_env``.
        ``extra()`` adds entries to the record (the off-policy loop's ``q_mean``)."""
        step = self.step
        started = time.perf_counter()
        result = evaluate_episodes(lambda o: agent.act(o, step, deterministic=True), self.eval_env,
                                   seed=self.eval_seed, episodes=self.config.eval_episodes)
        mean, std = summarize(result.returns)
        now = time.perf_counter()
        self.eval_seconds += now - started
        # Seconds of the run so far (over all its sessions), and the part of them not spent evaluating: "time to
        # a return" comparisons between libraries with different evaluation protocols use the latter.
        record = {"step": step, "return_mean": mean, "return_std": std, "returns": result.returns.tolist(),
                  "seeds": result.seeds, "wall_seconds": now - self.start_time,
                  "train_seconds": now - self.start_time - self.eval_seconds}
        if result.metrics:
            record["metrics"] = {k: float(v.nanmean()) for k, v in result.metrics.items()}
            record["episode_metrics"] = {k: v.tolist() for k, v in result.metrics.items()}
        if extra is not None:
            record.update(extra())
        self.evaluations.append(record)
        self.logger.evaluation(record)
        self.bar.set_postfix(eval_return=f"{mean:.1f}")

    def save(self, agent: Any, state: dict[str, Any]) -> None:
        """Write the checkpoint: the agent, the environments, the global RNGs and the loop's own ``state``."""
        save_checkpoint(self.run_dir / CHECKPOINT, {
            "algo": self.algo, "config": dataclasses.asdict(self.config), "step": self.step,
            "agent": agent.state_dict(), "env": self.env.state_dict(), "rng": global_rng_state(),
            "clock": {"wall_seconds": time.perf_counter() - self.start_time, "eval_seconds": self.eval_seconds},
            **state})

    def advance(self, new_step: int, agent: Any, state: Callable[[], dict[str, Any]],
                eval_extra: Callable[[], dict[str, float]] | None = None) -> None:
        """Move to ``new_step``; evaluate (with ``eval_extra``'s entries) and checkpoint when an interval (or the
        end) is crossed."""
        previous, self.step = self.step, new_step
        self.bar.update(new_step - previous)
        done = new_step >= self.config.total_steps
        if crossed(previous, new_step, self.config.eval_interval) or done:
            self.evaluate(agent, eval_extra)
        if crossed(previous, new_step, self.config.checkpoint_interval) or done:
            self.save(agent, state())

    @property
    def finished(self) -> bool:
        return self.step >= self.config.total_steps

    def finish(self, agent: Any, extra_summary: dict[str, Any] | None = None) -> TrainResult:
        """Close everything and write ``summary.json``."""
        self.bar.close()
        self.logger.close()
        self.env.close()
        self.eval_env.close()
        seconds = time.perf_counter() - self.session_start
        final = self.evaluations[-1] if self.evaluations else {}
        summary = {"algo": self.algo, "env": self.env_id, "seed": self.config.seed, "steps": self.step,
                   "final_return_mean": final.get("return_mean", math.nan),
                   "final_return_std": final.get("return_std", math.nan), "wall_seconds_this_session": seconds,
                   "steps_per_second_this_session": (self.step - self.start_step) / max(seconds, 1e-9),
                   **(extra_summary or {})}
        save_summary(self.run_dir, summary)
        self.lock.release()
        return TrainResult(agent=agent, run_dir=self.run_dir, evaluations=self.evaluations)

    def close(self) -> None:
        """Release the environments of a session that did not start (its agent could not be built)."""
        self.env.close()
        self.eval_env.close()
        self.lock.release()


def distributed_env_factory(env: EnvSource | None) -> EnvFactory | None:
    """What each rollout actor builds its environments from: None (``config.env``) or the factory given."""
    if env is None or (callable(env) and not is_env(env)):
        return env
    raise ValueError("a distributed run (distributed.workers > 0) builds its environments in each rollout actor: "
                     "pass env as a factory seed -> BatchedEnv (e.g. lambda seed: rlcore.envs.make('Hopper-v5', "
                     "seed=seed)) or set config.env, not an environment object.")


def run_session(algo: str, config: RunConfig, make_agent: Callable[[Any, envs.BatchedEnv], Any],
                loop: Callable[[RunSession, Any, Any], TrainResult], env: EnvSource | None = None,
                eval_env: EnvSource | None = None, distributed_loop: str | None = None) -> TrainResult:
    """What both loops do around their own ``loop(session, config, agent)``: open the session, make the agent
    (a failure leaves nothing on disk), and run the loop with the value checks of the objectives off.

    With ``config.distributed.workers > 0`` the loop is instead ``rlcore.distributed.loops.<distributed_loop>``
    (``run_off_policy`` or ``run_on_policy``), which collects on Ray rollout actors."""
    if config.distributed.workers > 0:
        if distributed_loop is None:
            raise ValueError(f"{algo} has no distributed loop; set distributed.workers=0.")
        factory = distributed_env_factory(env)  # refuse an environment object before anything is built
        from rlcore.distributed import loops as distributed_loops

        remote_loop = getattr(distributed_loops, distributed_loop)

        def loop(session: RunSession, config: Any, agent: Any) -> TrainResult:
            return remote_loop(session, config, agent, make_agent, factory)

    session = RunSession(algo, config, env, eval_env)
    try:
        check_resumable(session.checkpoint, config.distributed.workers)
        agent = make_agent(config, session.env)
    except Exception:
        session.close()
        raise
    try:
        with validate_args(False):
            return loop(session, config, agent)
    finally:  # a loop that raised must not keep the run directory locked in this process
        session.lock.release()
