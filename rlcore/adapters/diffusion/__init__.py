"""RL fine-tuning of diffusion models (DPOK, DDPO-style PPO, reward-weighted regression, DiffCon's f-divergence
PG) on the shared objectives. One job per module:

* :mod:`~rlcore.adapters.diffusion.steps`: :class:`GaussianSteps`, a ``diffusers`` DDPM or DDIM (eta > 0)
  scheduler's reverse steps as Gaussian policies, with exact log-probs and closed-form KL / f-divergences;
* :mod:`~rlcore.adapters.diffusion.env`: :class:`DenoisingEnv`, the denoising MDP behind the batched
  environment interface (state ``(x_t, t, condition)``, action ``x_{t-1}``, reward at the last step);
* :mod:`~rlcore.adapters.diffusion.sampling`: :func:`predict_noise` for any ε-denoiser (a plain ``nn.Module``
  or a ``diffusers`` UNet) and :func:`rollout`, trajectories with their log-probs and KL to a reference;
* :mod:`~rlcore.adapters.diffusion.testbeds`: :func:`~rlcore.adapters.diffusion.testbeds.ring`, the 2-D test
  bed with a denoiser the library pretrains and caches, and :func:`~rlcore.adapters.diffusion.testbeds.digits`
  (:mod:`~rlcore.adapters.diffusion.digits`): 8x8 digits, a class-conditional ``UNet2DModel``, reward and
  held-out classifiers, and a localized defect with its trained detector;
* :mod:`~rlcore.adapters.diffusion.trainable`: the trainable part: the full model, ``peft`` LoRA, or DiffCon's
  :class:`SideNetwork` over the frozen backbone;
* :mod:`~rlcore.adapters.diffusion.finetune`: :func:`finetune` (methods ``"dpok"``, ``"ppo"``, ``"rwr"``,
  ``"fpg"``; conditions; Focus-N-Fix's region-aware fixing with ``region=``; TensorBoard logs with
  ``log_dir=``) and :func:`kl_optimum`, the exact optimum of the KL-regularised problem they are measured
  against; with ``FinetuneConfig(kl_target=...)`` a KL budget instead of a fixed β
  (:mod:`~rlcore.adapters.diffusion.kl_control`).

``rlcore train diffusion`` (:mod:`~rlcore.adapters.diffusion.cli`) runs it on the shipped test beds in a run
directory that resumes.
"""

from rlcore.adapters.diffusion import testbeds
from rlcore.adapters.diffusion.env import DenoisingEnv
from rlcore.adapters.diffusion.finetune import (
    METHODS,
    FinetuneConfig,
    FinetuneResult,
    KLOptimum,
    finetune,
    kl_optimum,
    knn_kl,
    region_log_probs,
)
from rlcore.adapters.diffusion.kl_control import KLController
from rlcore.adapters.diffusion.sampling import Trajectory, predict_noise, rollout
from rlcore.adapters.diffusion.steps import DIVERGENCES, GaussianSteps
from rlcore.adapters.diffusion.trainable import TRAINABLE, SideNetwork, make_trainable, trainable_parameters

__all__ = ["DIVERGENCES", "METHODS", "TRAINABLE", "DenoisingEnv", "FinetuneConfig", "FinetuneResult", "GaussianSteps",
           "KLController", "KLOptimum", "SideNetwork", "Trajectory", "finetune", "kl_optimum", "knn_kl",
           "make_trainable", "predict_noise", "region_log_probs", "rollout", "testbeds", "trainable_parameters"]
