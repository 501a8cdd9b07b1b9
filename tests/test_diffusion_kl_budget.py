"""Fine-tuning under a KL budget (``FinetuneConfig.kl_target``): the dual step on β, and (slow) every method within
90 % of the exact optimum at no more than its KL on the ring. (A budgeted run resuming bit for bit is in
``test_diffusion.py``'s resume test.)"""

from __future__ import annotations

import math

import pytest
import torch

from rlcore.adapters import diffusion
from rlcore.adapters.diffusion.kl_control import KLController

torch.set_num_threads(1)


def _ring_reward(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0]


@pytest.fixture(scope="module")
def bed() -> diffusion.testbeds.TestBed:
    return diffusion.testbeds.ring(seed=0)


def test_the_dual_step_finds_the_beta_whose_kl_is_the_target():
    # A penalised optimum's KL falls as β grows; here KL(β) = 2 / β², so the target 0.5 needs β = 2.
    controller = KLController(target=0.5, beta=0.1, rate=0.3)
    for _ in range(200):
        controller.update(2 / controller.beta ** 2)
    assert controller.beta == pytest.approx(2.0, rel=1e-3)
    # One estimate moves β by at most exp(rate), however far off it is; a KL estimate <= 0 counts as too low.
    controller = KLController(target=1.0, beta=1.0, rate=0.3)
    assert controller.update(1e9) == pytest.approx(math.exp(0.3))
    assert controller.update(-0.1) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [{"target": 0.0}, {"beta": -1.0}, {"rate": float("nan")}])
def test_the_controller_refuses_a_non_positive_setting(bad):
    settings = {"target": 1.0, "beta": 0.5, "rate": 0.3, **bad}
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"needs {name} > 0"):
        KLController(**settings)


def test_a_kl_budget_needs_a_positive_starting_beta(bed):
    config = diffusion.FinetuneConfig(kl_target=1.0)
    with pytest.raises(ValueError, match="kl_weight is β's starting value and must be > 0, got 0"):
        diffusion.finetune(bed.model, bed.scheduler, _ring_reward, "ppo", 0.0, 2, 0, config)


def test_the_step_size_decays_over_the_last_share_of_the_iterations(bed):
    # Adam's steps scale with the step size: decaying it over every iteration moves the weights about half as
    # far as a constant one on the same draws.
    settings = {"batch_size": 32, "num_inference_steps": 5, "eval_samples": 64, "rwr_samples": 256}
    moved = {}
    for fraction in (0.0, 1.0):
        result = diffusion.finetune(bed.model, bed.scheduler, _ring_reward, "rwr", 0.5, 8, 0,
                                    diffusion.FinetuneConfig(**settings, lr_decay_fraction=fraction))
        moved[fraction] = sum(float((result.model.state_dict()[k] - w).norm() ** 2)
                              for k, w in bed.model.state_dict().items()) ** 0.5
    assert 0.4 * moved[0.0] < moved[1.0] < 0.75 * moved[0.0], moved
    with pytest.raises(ValueError, match=r"lr_decay_fraction .* in \[0, 1\] .* got 1\.5"):
        diffusion.finetune(bed.model, bed.scheduler, _ring_reward, "rwr", 0.5, 1, 0,
                           diffusion.FinetuneConfig(lr_decay_fraction=1.5))


@pytest.mark.slow
@pytest.mark.parametrize(("method", "steps"), [("dpok", 150), ("ppo", 150), ("rwr", 1_000), ("fpg", 150)])
def test_under_the_optimums_kl_budget_every_method_gets_90_percent_of_the_way(bed, method, steps):
    # Issue 24's ring target. Measured (budget 0.95x the optimum's KL at β = 0.5, seed 0, the step size decaying
    # over the last 30 %): share of the way / output KL over the optimum's: dpok 0.94 / 0.88, ppo 0.955 / 0.89,
    # rwr 0.91 / 0.91, fpg 0.94 / 0.87 (with a constant step size 0.89-0.90: the last iterate wandered).
    opt = diffusion.kl_optimum(bed, _ring_reward, kl_weight=0.5)
    config = diffusion.FinetuneConfig(kl_target=0.95 * opt.kl)
    result = diffusion.finetune(bed.model, bed.scheduler, _ring_reward, method, 0.5, steps, 0, config)
    share = (result.expected_reward - opt.reference_reward) / (opt.expected_reward - opt.reference_reward)
    assert share >= 0.9, (method, share)
    assert result.kl_to_reference <= opt.kl, (method, result.kl_to_reference, opt.kl)


def test_a_strict_budget_shrinks_the_update_and_checkpoints_the_trained_weights(bed, tmp_path):
    settings = {"batch_size": 64, "num_inference_steps": 5, "eval_samples": 1024, "kl_target": 0.02,
                "kl_probe_every": 2, "kl_probe_samples": 256, "learning_rate": 3e-3}
    soft = diffusion.finetune(bed.model, bed.scheduler, _ring_reward, "ppo", 0.05, 12, 0,
                              diffusion.FinetuneConfig(**settings))
    strict = diffusion.finetune(bed.model, bed.scheduler, _ring_reward, "ppo", 0.05, 12, 0,
                                diffusion.FinetuneConfig(**settings, kl_strict=True), run_dir=tmp_path / "run")
    assert soft.update_kept == 1.0 and 0.0 <= strict.update_kept < 1.0
    assert strict.kl_to_reference < soft.kl_to_reference
    # Every trainable weight is the soft run's, moved back along the line to the pretrained one by update_kept.
    for name, tuned in soft.model.state_dict().items():
        start = bed.model.state_dict()[name]
        torch.testing.assert_close(strict.model.state_dict()[name], start + strict.update_kept * (tuned - start))
    # The checkpoint holds the trained weights, not the shrunk ones: a resumed run trains on from them.
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["agent"]["policy"]
    for name, weight in saved.items():
        torch.testing.assert_close(weight, soft.model.state_dict()[name])
    with pytest.raises(ValueError, match="kl_strict makes the KL budget a hard limit; give the budget too"):
        diffusion.finetune(bed.model, bed.scheduler, _ring_reward, "ppo", 0.05, 1, 0,
                           diffusion.FinetuneConfig(kl_strict=True))
    with pytest.raises(ValueError, match=r"kl_reference_samples must be >= 10 .* got 3"):
        diffusion.finetune(bed.model, bed.scheduler, _ring_reward, "ppo", 0.05, 1, 0,
                           diffusion.FinetuneConfig(kl_reference_samples=3))
