"""The `rlcore` command end to end in a subprocess: train, TensorBoard events, resume, eval."""

import json
import os
import subprocess
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TINY = ["--total-steps", "600", "--learning-starts", "200", "--eval-interval", "300", "--eval-episodes", "2",
        "--checkpoint-interval", "300", "--log-interval", "200", "--no-progress"]


def rlcore(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlcore.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_train_eval_and_resume_from_the_command_line(tmp_path):
    done = rlcore("train", "caql", "--env", "Pendulum-v1", "--action-bound", "1.0", "--seed", "2",
                  "--log-root", "logs", *TINY, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "final evaluation at step 600" in done.stdout
    (run_dir,) = (tmp_path / "logs").iterdir()
    assert run_dir.name.startswith("caql-Pendulum-v1-s2-")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == "caql" and config["config"]["env"]["action_bound"] == 1.0
    assert len((run_dir / "evaluations.jsonl").read_text().splitlines()) == 2

    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"eval/return_mean", "train/q_loss", "train/maxq_solve_seconds", "train/td_rmse",
            "train/episode_return", "train/steps_per_second"} <= tags
    assert [e.step for e in events.Scalars("eval/return_mean")] == [300, 600]

    more = rlcore("train", "caql", "--resume", str(run_dir), "--total-steps", "900", "--no-progress", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert "final evaluation at step 900" in more.stdout

    evaluated = rlcore("eval", str(run_dir), "--episodes", "3", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "over 3 episodes" in evaluated.stdout
    # By default the run's own evaluation seeds and size: its last evaluation, reproduced.
    from rlcore.cli import evaluate_run

    last = json.loads((run_dir / "evaluations.jsonl").read_text().splitlines()[-1])
    assert evaluate_run(run_dir)["returns"] == last["returns"] and len(last["returns"]) == 2


def test_clear_errors_from_the_command_line(tmp_path):
    unknown = rlcore("train", "nosuchalgo", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown algorithm 'nosuchalgo'" in unknown.stderr
    assert all(name in unknown.stderr for name in ("caql", "vmbpo", "slate", "dialogue", "diffusion", "retrieval"))
    bad_env = rlcore("train", "caql", "--env", "NoSuchEnv-v0", *TINY, cwd=tmp_path)
    assert bad_env.returncode != 0 and "unknown or unavailable environment id 'NoSuchEnv-v0'" in bad_env.stderr
    missing = rlcore("eval", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode != 0 and "is not a run directory" in missing.stderr
    for device, fix in (("cdua", "such as 'cpu', 'cuda'"), ("cuda:7", "use --device cpu")):
        bad_device = rlcore("train", "caql", "--device", device, *TINY, "--log-root", str(tmp_path / "d"), cwd=tmp_path)
        assert bad_device.returncode == 2 and repr(device) in bad_device.stderr and fix in bad_device.stderr
        assert "Traceback" not in bad_device.stderr and not (tmp_path / "d").exists()


HELP_OF_EVERY_COMMAND = """
import contextlib, io, json
from rlcore import algos
from rlcore.cli import ADAPTER_CLIS, main
texts = {}
for name in [*algos.ALGORITHMS, *ADAPTER_CLIS]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["train", name, "--help"])
    texts[name] = out.getvalue()
print(json.dumps(texts))
"""


def test_help_shows_no_sphinx_markup(tmp_path):
    """`rlcore train X --help` is read in a terminal: a docstring's :class:`~a.b.C` must read as `C` there."""
    done = subprocess.run([sys.executable, "-c", HELP_OF_EVERY_COMMAND], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-2000:]
    texts = json.loads(done.stdout)
    assert set(texts) >= {"caql", "sac", "vmbpo", "mbpo", "ppo", "rwr", "slate", "dialogue", "diffusion", "retrieval"}
    for name, text in texts.items():
        assert "--seed" in text, f"rlcore train {name} --help printed no options:\n{text[:500]}"
        for role in (":class:`", ":func:`", ":meth:`", ":mod:`", ":attr:`", ":data:`"):
            assert role not in text, f"rlcore train {name} --help shows {role}: {text[text.index(role) - 80:][:200]}"
