"""Every network and policy head of rlcore, one job per module.

* :mod:`~rlcore.networks.mlp`: the Glorot-initialised ReLU MLP the others are built from;
* :mod:`~rlcore.networks.q_networks`: :class:`QNetwork` (a plain ReLU MLP, which the max-Q solvers read) and
  :class:`TwinQ` (stacked critics);
* :mod:`~rlcore.networks.actors`: :class:`DeterministicActor` (CAQL's action function) and
  :class:`SquashedGaussianActor` (SAC, VMBPO);
* :mod:`~rlcore.networks.actor_critic`: the on-policy actor-critics (Gaussian and categorical heads);
* :mod:`~rlcore.networks.normalizer`: :class:`ObsNormalizer`, running observation statistics as a module;
* :mod:`~rlcore.networks.ensemble`: batched ensembles of MLPs (critics, dynamics models);
* :mod:`~rlcore.networks.distributions`: :class:`DiagGaussian` and :class:`MaskedCategorical` heads.
"""

from rlcore.networks.actor_critic import CategoricalActorCritic, GaussianActorCritic, layer_init, tanh_mlp
from rlcore.networks.actors import DeterministicActor, SquashedGaussianActor
from rlcore.networks.distributions import DiagGaussian, MaskedCategorical, kl_divergence
from rlcore.networks.ensemble import EnsembleLinear, EnsembleMLP
from rlcore.networks.mlp import mlp
from rlcore.networks.normalizer import ObsNormalizer
from rlcore.networks.q_networks import QNetwork, TwinQ

__all__ = ["CategoricalActorCritic", "DeterministicActor", "DiagGaussian", "EnsembleLinear", "EnsembleMLP",
           "GaussianActorCritic", "MaskedCategorical", "ObsNormalizer", "QNetwork", "SquashedGaussianActor", "TwinQ",
           "kl_divergence", "layer_init", "mlp", "tanh_mlp"]
