"""The diffusion adapter: Gaussian steps equal the diffusers schedulers' own, exact log-probs and closed-form
KL against torch.distributions and Monte Carlo, the exact KL-regularised optimum, the ring test bed, and (slow)
every fine-tuning method most of the way to the optimum on the ring."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from rlcore.adapters import diffusion
from rlcore.objectives import f_divergence

torch.set_num_threads(1)


def _ring_reward(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0]


@pytest.fixture(scope="module")
def bed() -> diffusion.testbeds.TestBed:
    return diffusion.testbeds.ring(seed=0)  # pretrained once (about 30 s), then read from the cache


def test_steps_equal_the_diffusers_schedulers_steps():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    ddim = DDIMScheduler(num_train_timesteps=100, clip_sample=False)
    steps = diffusion.GaussianSteps.from_scheduler(ddim, 20, eta=0.7)
    for i, t in enumerate(steps.timesteps.tolist()[:-1]):  # the last step's zero variance is replaced
        z = torch.randn(6, 3, generator=g)
        expected = ddim.step(eps, t, x, eta=0.7, variance_noise=z).prev_sample
        torch.testing.assert_close(steps.mean(x, eps, i) + steps.std[i] * z, expected, atol=1e-5, rtol=1e-5)
    ddpm = DDPMScheduler(num_train_timesteps=100, clip_sample=True)
    steps = diffusion.GaussianSteps.from_scheduler(ddpm, 25)
    for i, t in enumerate(steps.timesteps.tolist()[:-1]):
        expected = ddpm.step(eps, t, 3 * x, generator=torch.Generator().manual_seed(i)).prev_sample
        z = torch.randn(6, 3, generator=torch.Generator().manual_seed(i))  # the noise DDPM's step drew
        torch.testing.assert_close(steps.mean(3 * x, eps, i) + steps.std[i] * z, expected, atol=1e-5, rtol=1e-5)
    assert (steps.std > 0).all()  # every step a proper Gaussian, the last one included


def test_log_prob_kl_and_f_divergences_are_exact():
    steps = diffusion.GaussianSteps.from_scheduler(DDPMScheduler(num_train_timesteps=50, clip_sample=False), 10)
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(4, 2, 3, generator=g)
    i = 4
    sigma = steps.std[i]
    x = mean + sigma * torch.randn(4, 2, 3, generator=g)
    normal = torch.distributions.Normal(mean, sigma).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(steps.log_prob(x, mean, i), normal)
    # Closed-form KL against Monte Carlo E_π[log π − log π_ref], and the χ² against the shared estimator.
    m, r = 0.3 * sigma * torch.randn(1, 3, generator=g), torch.zeros(1, 3)
    samples = m + sigma * torch.randn(200_000, 3, generator=g)
    log_ratio = steps.log_prob(samples, m.expand_as(samples), i) - steps.log_prob(samples, r.expand_as(samples), i)
    assert float(steps.kl(m, r, i)) == pytest.approx(float(log_ratio.mean()), rel=0.05)
    assert float(steps.kl(m, r, i)) == pytest.approx(float(f_divergence(log_ratio, "kl", samples_from="policy")),
                                                     rel=0.05)
    ref_samples = sigma * torch.randn(200_000, 3, generator=g)
    ref_ratio = (steps.log_prob(ref_samples, m.expand_as(ref_samples), i)
                 - steps.log_prob(ref_samples, r.expand_as(ref_samples), i))
    assert float(steps.divergence(m, r, i, "chi2")) == pytest.approx(
        float(f_divergence(ref_ratio, "chi2", samples_from="ref")), rel=0.05)
    assert torch.equal(steps.divergence(m, r, i, "reverse_kl"), steps.kl(m, r, i))  # equal variances
    with pytest.raises(ValueError, match="divergence must be one of 'kl', 'reverse_kl', 'chi2'; got 'js'"):
        steps.divergence(m, r, i, "js")


def test_bad_schedulers_are_refused():
    with pytest.raises(ValueError, match=r"eta = 0\.0 is deterministic"):
        diffusion.GaussianSteps.from_scheduler(DDIMScheduler(num_train_timesteps=10), 5, eta=0.0)
    with pytest.raises(ValueError, match="prediction_type='epsilon'"):
        diffusion.GaussianSteps.from_scheduler(DDPMScheduler(num_train_timesteps=10, prediction_type="sample"), 5)
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer in \[1, 10\], got 20"):
        diffusion.GaussianSteps.from_scheduler(DDPMScheduler(num_train_timesteps=10), 20)
    with pytest.raises(ValueError, match="DDPMScheduler or DDIMScheduler"):
        diffusion.GaussianSteps.from_scheduler(object(), 5)


def test_a_diffusers_unet_rolls_out_with_log_probs_and_kl():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=4).eval()
    steps = diffusion.GaussianSteps.from_scheduler(DDPMScheduler(num_train_timesteps=20), 4)
    traj = diffusion.rollout(unet, steps, (3, 1, 8, 8), torch.Generator().manual_seed(0), reference=unet)
    assert traj.states.shape == (5, 3, 1, 8, 8) and traj.log_probs.shape == (4, 3)
    torch.testing.assert_close(traj.kl, torch.zeros(4, 3))  # the same model: no KL
    again = diffusion.rollout(unet, steps, (3, 1, 8, 8), torch.Generator().manual_seed(0))
    assert torch.equal(again.samples, traj.samples)  # seeded


class GaussianSampler:
    """A reference whose KL-regularised optimum is known in closed form: p_ref = N(0, I), r(x) = a·x gives
    p* = N(β⁻¹ a, I), E_{p*}[r] = ‖a‖²/β and KL(p* ‖ p_ref) = ‖a‖²/(2β²)."""

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def test_kl_optimum_is_exact_on_a_gaussian_reference():
    a, beta = torch.tensor([0.3, -0.4]), 0.5
    opt = diffusion.kl_optimum(GaussianSampler(), lambda x: x @ a, kl_weight=beta, num_samples=400_000)
    assert opt.expected_reward == pytest.approx(0.25 / beta, rel=0.02)
    assert opt.kl == pytest.approx(0.25 / (2 * beta ** 2), rel=0.03)
    assert abs(opt.reference_reward) < 0.01
    with pytest.raises(ValueError, match="kl_weight must be > 0"):
        diffusion.kl_optimum(GaussianSampler(), lambda x: x @ a, kl_weight=0.0)
    with pytest.raises(ValueError, match=r"reward_fn must map \[N, ...\] samples to an \[N\] tensor"):
        diffusion.kl_optimum(GaussianSampler(), lambda x: x, kl_weight=1.0, num_samples=10)


def test_knn_kl_estimates_the_kl_of_two_gaussians():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(4_000, 2, generator=g) + torch.tensor([1.0, 0.0])
    q = torch.randn(4_000, 2, generator=g)
    assert diffusion.knn_kl(p, q) == pytest.approx(0.5, abs=0.1)  # KL(N(μ, I) ‖ N(0, I)) = ‖μ‖²/2
    assert abs(diffusion.knn_kl(q, torch.randn(4_000, 2, generator=g))) < 0.08
    assert diffusion.knn_kl(p, q, chunk=7) == pytest.approx(diffusion.knn_kl(p, q), rel=1e-12)  # chunks change nothing


def test_knn_kl_needs_many_q_samples_where_p_sits_in_q_tails():
    # P = N((3, 0), 0.3² I) lies in the tail of Q = N(0, I): with as few Q samples as P samples the estimate
    # reads about 8 % low, with 16x more within a few per cent (why kl_reference_samples exceeds eval_samples).
    true = 2 * ((0.3 ** 2 - 1) / 2 - math.log(0.3)) + 3.0 ** 2 / 2
    error = {}
    for m in (2_000, 32_000):
        estimates = []
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            p = 0.3 * torch.randn(2_000, 2, generator=g) + torch.tensor([3.0, 0.0])
            estimates.append(diffusion.knn_kl(p, torch.randn(m, 2, generator=g)))
        error[m] = abs(sum(estimates) / len(estimates) - true) / true
    assert error[32_000] < 0.04 and error[32_000] < error[2_000] / 2, error
    with pytest.raises(ValueError, match="knn_kl needs more than k = 5 samples of P"):
        diffusion.knn_kl(p[:5], p)


def test_ring_test_bed_is_cached_seeded_and_on_the_ring(bed, tmp_path):
    x = bed.sample(4_096, seed=1)
    assert x.shape == (4_096, 2) and torch.equal(x, bed.sample(4_096, seed=1))
    radius = x.norm(dim=1)
    assert abs(float(radius.mean()) - 2.0) < 0.1 and float(radius.std()) < 0.25
    angle = torch.atan2(x[:, 1], x[:, 0])
    modes = torch.bincount(((angle / (2 * math.pi / 8)).round() % 8).long(), minlength=8)
    assert modes.min() > 0.08 * 4_096  # every one of the 8 modes is sampled (equal weights: 1/8 each)
    small = diffusion.testbeds.ring(seed=0, cache_dir=tmp_path, pretrain_steps=10)
    assert list((tmp_path / "diffusion").glob("ring-*.pt"))
    again = diffusion.testbeds.ring(seed=0, cache_dir=tmp_path, pretrain_steps=10)
    for a, b in zip(small.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['width'\]"):
        diffusion.testbeds.ring(width=3)


def test_finetune_improves_the_reward_and_leaves_the_pretrained_model_alone(bed):
    before = {k: v.clone() for k, v in bed.model.state_dict().items()}
    config = diffusion.FinetuneConfig(batch_size=128, num_inference_steps=20, eval_samples=1_024)
    # The monitor: a held-out reward that only partly agrees with the optimised one (the ring's upper right).
    def held_out(x):
        return (x[:, 0] + x[:, 1]) / 2

    result = diffusion.finetune(bed.model, bed.scheduler, _ring_reward, method="dpok", kl_weight=0.5, steps=15,
                                seed=0, config=config, held_out_reward=held_out)
    reference = bed.sample(4_096, seed=3)
    reference_reward = float(_ring_reward(reference).mean())
    assert result.expected_reward > reference_reward + 0.2, (result.expected_reward, reference_reward)
    assert all("held_out_reward" in h and "kl" in h for h in result.history)
    # Pushing right moves the held-out score only half as much: the gap is visible as a number.
    gain = result.expected_reward - reference_reward
    held_gain = result.held_out_reward - float(held_out(reference).mean())
    assert 0 < held_gain < 0.8 * gain, (gain, held_gain)
    assert result.kl_to_reference > 0 and result.trajectory_kl > 0
    assert result.sample(64, seed=1).shape == (64, 2) and torch.equal(result.sample(64, 1), result.sample(64, 1))
    for key, value in bed.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(ValueError, match="method must be one of 'dpok', 'ppo', 'rwr', 'fpg'; got 'sft'"):
        diffusion.finetune(bed.model, bed.scheduler, _ring_reward, method="sft")
    with pytest.raises(ValueError, match=r"> 0 for rwr"):
        diffusion.finetune(bed.model, bed.scheduler, _ring_reward, method="rwr", kl_weight=0.0)
    with pytest.raises(ValueError, match=r"reward_fn must map"):
        diffusion.finetune(bed.model, bed.scheduler, lambda x: x.sum(), method="dpok", steps=1, config=config)


@pytest.mark.parametrize("trainable", ["lora", "side"])
def test_lora_and_the_side_network_train_without_touching_the_backbone(bed, trainable):
    config = diffusion.FinetuneConfig(batch_size=128, eval_samples=1_024, trainable=trainable,
                                      learning_rate=3e-3 if trainable == "lora" else 1e-3)
    result = diffusion.finetune(bed.model, bed.scheduler, _ring_reward, method="dpok", kl_weight=0.5, steps=15,
                                seed=0, config=config)
    full = sum(p.numel() for p in bed.model.parameters())
    assert 0 < result.trainable_parameters < full
    backbone = result.model.backbone if trainable == "side" else result.model.get_base_model()
    # The frozen weights are the pretrained ones, bit for bit (LoRA keeps them beside its adapters).
    pretrained = bed.model.state_dict()
    for name, value in backbone.state_dict().items():
        key = name.replace("base_layer.", "")
        if key in pretrained:
            assert torch.equal(value, pretrained[key]), name
    reference_reward = float(_ring_reward(bed.sample(4_096, seed=3)).mean())
    assert result.expected_reward > reference_reward + 0.1, (trainable, result.expected_reward, reference_reward)
    # Zero-initialised adapters and control: before any update the model predicts as the pretrained one.
    start = diffusion.make_trainable(__import__("copy").deepcopy(bed.model), trainable)
    x, t = torch.randn(16, 2), torch.full((16,), 50)
    torch.testing.assert_close(diffusion.predict_noise(start, x, t), diffusion.predict_noise(bed.model, x, t))
    with pytest.raises(ValueError, match="trainable must be one of 'full', 'lora', 'side'; got 'bias'"):
        diffusion.make_trainable(bed.model, "bias")


@pytest.mark.slow
@pytest.mark.parametrize(("method", "steps"), [("dpok", 150), ("ppo", 150), ("rwr", 1_000), ("fpg", 150)])
def test_every_method_moves_most_of_the_way_to_the_exact_optimum(bed, method, steps):
    # Measured (kl_weight 0.5, seed 0): share of the way from the reference's reward to the optimum's / output
    # KL over the optimum's (k-NN against 32,768 reference samples): dpok 0.86 / 0.85, ppo 0.96 / 1.03,
    # rwr 1.04 / 1.31, fpg 0.87 / 0.77.
    beta = 0.5
    opt = diffusion.kl_optimum(bed, _ring_reward, kl_weight=beta)
    result = diffusion.finetune(bed.model, bed.scheduler, _ring_reward, method=method, kl_weight=beta, steps=steps,
                                seed=0)
    share = (result.expected_reward - opt.reference_reward) / (opt.expected_reward - opt.reference_reward)
    assert share >= 0.8, (method, share)
    assert result.kl_to_reference <= 1.5 * opt.kl, (method, result.kl_to_reference, opt.kl)


# ---------------------------------------------------------------------------------------------- resume, logs
class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("method", ["dpok", "rwr"])
@pytest.mark.parametrize("kl_target", [None, 0.05], ids=["fixed-beta", "kl-budget"])
def test_a_fine_tuning_run_resumes_bit_for_bit_after_a_crash(bed, tmp_path, method, kl_target):
    # With a KL budget β is adapted at every iteration (kl_probe_every=1): the resumed run must continue from
    # the checkpoint's β, not the starting one.
    config = diffusion.FinetuneConfig(batch_size=32, num_inference_steps=5, eval_samples=64, checkpoint_every=2,
                                      log_every=1, rwr_samples=256, kl_target=kl_target, kl_probe_every=1,
                                      kl_probe_samples=64)
    kwargs = {"method": method, "kl_weight": 0.5, "steps": 6, "seed": 3, "config": config}
    whole = diffusion.finetune(bed.model, bed.scheduler, _ring_reward, **kwargs)
    betas = [h["beta"] for h in whole.history]
    if kl_target is not None:
        assert betas[0] == 0.5 and len(set(betas)) > 1  # β moved
        assert whole.kl_weight not in (0.5, betas[-1])  # the result holds β after the last iteration's step

    calls = {"n": 0}

    def crashing(x):  # dies during the 5th iteration: the checkpoint of iteration 4 is the one to resume
        calls["n"] += 1
        if calls["n"] == 5:
            raise Crash
        return _ring_reward(x)

    monitor = crashing if method == "rwr" else None  # rwr scores its data once; its probes call the monitor
    with pytest.raises(Crash):
        diffusion.finetune(bed.model, bed.scheduler, _ring_reward if monitor else crashing, **kwargs,
                           held_out_reward=monitor, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    with pytest.raises(ValueError, match="already holds a fine-tuning checkpoint"):
        diffusion.finetune(bed.model, bed.scheduler, _ring_reward, **kwargs, run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match=r"its kl_weight is 0\.5"):
        diffusion.finetune(bed.model, bed.scheduler, _ring_reward, **{**kwargs, "kl_weight": 0.2},
                           run_dir=tmp_path / "run", resume=True)
    resumed = diffusion.finetune(bed.model, bed.scheduler, _ring_reward, **kwargs,
                                 held_out_reward=_ring_reward if monitor else None, run_dir=tmp_path / "run",
                                 resume=True)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.expected_reward == whole.expected_reward
    assert [h["beta"] for h in resumed.history] == betas and resumed.kl_weight == whole.kl_weight
    if method == "dpok":
        assert [h["reward"] for h in resumed.history] == [h["reward"] for h in whole.history]


def test_tensorboard_logs_rewards_kl_and_sample_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    unet = tiny_unet(num_class_embeds=10)
    scheduler = DDPMScheduler(num_train_timesteps=20)
    config = diffusion.FinetuneConfig(batch_size=8, num_inference_steps=3, eval_samples=8, log_every=1,
                                      image_every=1)
    labels = []

    def reward(x, y):
        labels.append(y.clone())
        return -x.flatten(1).pow(2).mean(1) + 0.1 * y.float()

    result = diffusion.finetune(unet, scheduler, reward, method="ppo", kl_weight=0.1, steps=2, seed=0,
                                config=config, sample_shape=(1, 8, 8), conditions=torch.tensor([3, 7]),
                                held_out_reward=reward, log_dir=tmp_path / "tb")
    assert all(set(y.tolist()) <= {3, 7} for y in labels) and labels[0].shape == (8,)
    assert torch.equal(result.conditions, torch.tensor([3, 7]))
    assert result.sample(4, seed=0).shape == (4, 1, 8, 8)  # conditions cycle by default
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = events.Tags()
    assert {"finetune/reward", "finetune/kl", "finetune/held_out_reward"} <= set(tags["scalars"])
    assert "finetune/samples" in tags["images"]
    with pytest.raises(ValueError, match="conditions must be a non-empty tensor"):
        diffusion.finetune(unet, scheduler, reward, conditions=[3, 7], sample_shape=(1, 8, 8))


def tiny_unet(**kwargs) -> UNet2DModel:
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=4, **kwargs).eval()


# ---------------------------------------------------------------------------------------------- Focus-N-Fix
def test_region_log_prob_and_kl_are_those_of_the_region_and_reach_nothing_outside():
    steps = diffusion.GaussianSteps.from_scheduler(DDPMScheduler(num_train_timesteps=20), 4)
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 1, 8, 8, generator=g, requires_grad=True)
    ref = torch.randn(5, 1, 8, 8, generator=g)
    x = torch.randn(5, 1, 8, 8, generator=g)
    region = torch.rand(5, 1, 8, 8, generator=g) < 0.2
    lp = steps.log_prob(x, mean, 1, mask=region)
    sigma = float(steps.std[1])
    expected = torch.stack([torch.distributions.Normal(mean[i][region[i]], sigma).log_prob(x[i][region[i]]).sum()
                            for i in range(5)])
    torch.testing.assert_close(lp, expected)
    (lp.sum() + steps.kl(mean, ref, 1, mask=region).sum()).backward()
    assert (mean.grad[~region] == 0).all() and (mean.grad[region] != 0).any()  # the fix acts inside only
    inside, outside = steps.kl(mean, ref, 1, mask=region), steps.kl(mean, ref, 1, mask=~region)
    torch.testing.assert_close(inside + outside, steps.kl(mean, ref, 1))
    assert (steps.kl(ref, ref, 1, mask=~region) == 0).all()  # preservation is zero when the means agree

    torch.manual_seed(0)
    unet = tiny_unet()
    traj = diffusion.rollout(unet, steps, (3, 1, 8, 8), torch.Generator().manual_seed(1))
    mask = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
    mask[:, :, 2:5, 2:5] = True
    stored = diffusion.region_log_probs(steps, traj, mask)
    with torch.no_grad():
        for i in range(steps.num_steps):
            mu = steps.mean(traj.states[i], diffusion.predict_noise(unet, traj.states[i], int(steps.timesteps[i])), i)
            torch.testing.assert_close(stored[i], steps.log_prob(traj.states[i + 1], mu, i, mask=mask))


def test_region_fixing_refuses_what_it_cannot_do():
    unet = tiny_unet()
    scheduler = DDPMScheduler(num_train_timesteps=20)
    config = diffusion.FinetuneConfig(batch_size=4, num_inference_steps=2, eval_samples=4)

    def reward(x):
        return x.flatten(1).mean(1)

    with pytest.raises(ValueError, match="use method 'dpok', 'ppo' or 'fpg', not 'rwr'"):
        diffusion.finetune(unet, scheduler, reward, method="rwr", region=lambda x: x > 0, sample_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"region must map \[N, \.\.\.\] samples to a per-element deficiency map"):
        diffusion.finetune(unet, scheduler, reward, method="dpok", steps=1, config=config, sample_shape=(1, 8, 8),
                           region=lambda x: x.flatten(1).mean(1) > 0)


# ---------------------------------------------------------------------------------------------- digits (slow)
@pytest.fixture(scope="module")
def digits_bed():
    return diffusion.testbeds.digits(seed=0)  # trained once (about 6 minutes on one core), then cached


@pytest.mark.slow
def test_digits_bed_draws_each_prompted_class_and_its_defect_as_often_as_its_data(digits_bed):
    bed = digits_bed
    y = bed.labels(200)
    x = bed.sample(200, seed=1, labels=y)
    assert x.shape == (200, 1, 8, 8) and torch.equal(x, bed.sample(200, seed=1, labels=y))
    # Samples are digits of the prompted class for a classifier that never saw half of the images.
    assert float(bed.held_out_class_reward(x, y).mean()) > 0.9
    from rlcore.adapters.diffusion.digits import load_images

    images, labels = load_images()
    for classifier in (bed.classifier, bed.held_out_classifier):
        assert float((classifier(images).argmax(1) == labels).float().mean()) > 0.95
    zeros, y0 = bed.sample(300, seed=2, labels=0), bed.labels(300, 0)
    # The data: 8 % of zeros have ink in the patch, plus the 35 % given a dot.
    assert 0.25 < bed.defect_rate(zeros, y0) < 0.6
    assert bed.defect_rate(bed.sample(100, seed=3, labels=5), bed.labels(100, 5)) == 0.0  # another class: no defect
    true, found = bed.true_defect_map(zeros, y0), bed.defect_map(zeros, y0) > 0.5
    assert float((true & found).sum() / (true | found).sum()) > 0.85  # the trained detector finds the defect
    again = diffusion.testbeds.digits(seed=0)  # read from the cache: the same networks
    assert torch.equal(again.sample(8, seed=4), bed.sample(8, seed=4))
    with pytest.raises(ValueError, match="unknown setting"):
        diffusion.testbeds.digits(seed=0, layers=3)


@pytest.mark.slow
def test_fine_tuning_digits_raises_the_reward_with_the_held_out_classifier_watching(digits_bed):
    bed = digits_bed
    config = diffusion.FinetuneConfig(batch_size=32, eval_samples=200, log_every=1)
    result = diffusion.finetune(bed.model, bed.scheduler, bed.thickness, "ppo", 0.01, 8, 0, config, bed.sample_shape,
                                held_out_reward=bed.held_out_class_reward, conditions=torch.arange(10))
    y = bed.labels(200)
    before = float(bed.thickness(bed.sample(200, seed=1, labels=y)).mean())
    assert result.expected_reward > before + 0.03, (before, result.expected_reward)
    assert all("held_out_reward" in h for h in result.history)  # the class fidelity is logged at every record
    assert 0 <= result.held_out_reward <= 1


@pytest.mark.slow
def test_focus_n_fix_changes_the_region_and_far_less_outside_it_than_global_fine_tuning(digits_bed):
    bed = digits_bed
    y0 = bed.config.defect_class

    def fewer_defects(x, y):
        return -bed.defect_score(x, y)

    config = diffusion.FinetuneConfig(batch_size=32, eval_samples=64)
    runs = {name: diffusion.finetune(bed.model, bed.scheduler, fewer_defects, "dpok", 0.01, 6, 0, config,
                                     bed.sample_shape, conditions=torch.tensor([y0]), region=region)
            for name, region in (("focus", bed.defect_map), ("global", None))}
    y = bed.labels(256, y0)
    change = {}
    for name, result in runs.items():
        tuned, original = result.sample_pair(256, seed=7, condition=y)  # the same noise
        region = bed.defect_map(original, y) > 0.5
        diff = (tuned - original).abs()
        change[name] = (float(diff[region].mean()), float(diff[~region].mean()))
    assert change["focus"][0] > 3 * change["focus"][1], change  # it acts in the region
    assert change["focus"][1] < 0.5 * change["global"][1], change  # and leaves the rest far more alone


def test_rlcore_train_diffusion_writes_a_run_that_resumes(tmp_path, bed):
    from rlcore.adapters.diffusion.cli import train_main

    run = tmp_path / "run"
    small = ["--finetune.batch-size", "32", "--finetune.eval-samples", "128", "--finetune.num-inference-steps", "5"]
    assert train_main(["--steps", "3", "--run-dir", str(run), *small]) == 0
    files = {p.name for p in run.iterdir()}
    assert {"config.json", "checkpoint.pt", "summary.json"} <= files and any(f.startswith("events") for f in files)
    assert train_main(["--steps", "3", "--run-dir", str(run), *small]) == 2  # an existing run is refused
    assert train_main(["--resume", str(run), "--steps", "5"]) == 0
    import json

    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["reward"] == "right"
    assert train_main(["--reward", "class", "--steps", "1"]) == 2  # not a ring reward: named, nothing written
    # Settings that finetune refuses leave no run directory; a resume keeps the run's own settings.
    assert train_main(["--steps", "0", "--run-dir", str(tmp_path / "bad"), *small]) == 2
    assert train_main(["--kl-weight", "-1", "--run-dir", str(tmp_path / "bad"), *small]) == 2
    assert not (tmp_path / "bad").exists()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert train_main(["--resume", str(run), "--kl-weight", "5"]) == 2
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


# ---------------------------------------------------------------------------------------------- the MDP
def test_denoising_env_follows_the_batched_contract_and_equals_a_rollout():
    from rlcore import envs

    torch.manual_seed(0)
    unet = tiny_unet(num_class_embeds=10)
    scheduler = DDPMScheduler(num_train_timesteps=20)

    def reward(x, y):
        return x.flatten(1).mean(1) + y.float()

    def make():
        return diffusion.DenoisingEnv(scheduler, reward, (1, 8, 8), num_envs=3, num_inference_steps=4,
                                      conditions=torch.tensor([2, 5]), seed=0)

    env = make()
    assert isinstance(env, envs.BatchedEnv)
    obs, _ = env.reset(seed=1)
    assert obs["x_t"].shape == (3, 1, 8, 8) and set(obs["condition"].tolist()) <= {2, 5}
    start, condition = obs["x_t"].clone(), obs["condition"].clone()
    g = torch.Generator().manual_seed(9)
    total = torch.zeros(3)
    for i in range(4):
        with torch.no_grad():
            mean = env.step_mean(unet, obs)
        obs, r, terminated, truncated, info = env.step(mean + env.steps.std[i] * torch.randn(mean.shape, generator=g))
        total += r
        assert not truncated.any() and bool(terminated.all()) == (i == 3)
    x0 = info["final_obs"]["x_t"]
    torch.testing.assert_close(total, reward(x0, condition))  # the reward comes at the last step only
    assert torch.equal(info["episode_metrics"]["reward"], total) and torch.equal(info["applied_actions"], x0)
    assert (obs["step"] == 0).all() and not torch.equal(obs["x_t"], x0)  # same-step auto-reset: fresh chains
    # The same chain without the interface: the same start and step noise give the same samples.
    steps, x, g = diffusion.GaussianSteps.from_scheduler(scheduler, 4), start, torch.Generator().manual_seed(9)
    with torch.no_grad():
        for i in range(4):
            mu = steps.mean(x, diffusion.predict_noise(unet, x, int(steps.timesteps[i]), condition), i)
            x = mu + steps.std[i] * torch.randn(mu.shape, generator=g)
    torch.testing.assert_close(x, x0)
    again = make()
    again.load_state_dict(env.state_dict())
    assert torch.equal(again.step(obs["x_t"])[0]["x_t"], env.step(obs["x_t"])[0]["x_t"])  # exact resume
    with pytest.raises(ValueError, match="actions must have shape"):
        env.step(torch.zeros(3, 64))
