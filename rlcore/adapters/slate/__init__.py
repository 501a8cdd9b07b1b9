"""Slates: each turn the agent offers a user a slate of items, the user picks one or none, and the agent adapts.

After PASTA (an agent that offers a slate of prompt expansions over several turns and learns user types and
their choice models by EM) with SlateQ (Ie et al., 2019) as the value-based method. One job per module:

* :mod:`~rlcore.adapters.slate.world`: :class:`SlateEnvConfig`, the items and true user types, the rewards;
* :mod:`~rlcore.adapters.slate.choice`: :class:`ChoiceModel`, the mixture of conditional-logit user types;
* :mod:`~rlcore.adapters.slate.env`: :class:`SlateEnv`, the batched environment (``Slate-v0``);
* :mod:`~rlcore.adapters.slate.em`: EM for the choice model from logged choices, and recovery errors;
* :mod:`~rlcore.adapters.slate.topk`: the exact best slate under the decomposition, and brute force;
* :mod:`~rlcore.adapters.slate.networks`: the (state, item) pair network;
* :mod:`~rlcore.adapters.slate.slateq`: the SlateQ agent; :mod:`~rlcore.adapters.slate.ppo`: PPO over slates;
* :mod:`~rlcore.adapters.slate.baselines`: random, greedy and fixed diverse slates;
* :mod:`~rlcore.adapters.slate.api`: :func:`train_agent` and :func:`evaluate`;
  :mod:`~rlcore.adapters.slate.cli`: ``rlcore train slate`` and ``rlcore eval`` of slate runs.
"""

from rlcore.adapters.slate.api import METHODS, evaluate, train_agent
from rlcore.adapters.slate.baselines import DiverseSlate, GreedySlate, RandomSlate
from rlcore.adapters.slate.choice import ChoiceModel
from rlcore.adapters.slate.em import ChoiceLogs, EMResult, collect_logs, fit_choice_model, match_types, recovery_error
from rlcore.adapters.slate.env import SlateEnv, SlateSpace, random_slates
from rlcore.adapters.slate.ppo import SlatePPOAgent, SlatePPOConfig
from rlcore.adapters.slate.slateq import SlateQAgent, SlateQConfig
from rlcore.adapters.slate.topk import best_slate, brute_force_slate, slate_value
from rlcore.adapters.slate.world import REWARDS, ItemPool, SlateEnvConfig, UserTypes, item_rewards, make_world

__all__ = ["METHODS", "REWARDS", "ChoiceLogs", "ChoiceModel", "DiverseSlate", "EMResult", "GreedySlate", "ItemPool",
           "RandomSlate", "SlateEnv", "SlateEnvConfig", "SlatePPOAgent", "SlatePPOConfig", "SlateQAgent",
           "SlateQConfig", "SlateSpace", "UserTypes", "best_slate", "brute_force_slate", "collect_logs", "evaluate",
           "fit_choice_model", "item_rewards", "make_world", "match_types", "random_slates", "recovery_error",
           "slate_value", "train_agent"]
