"""Dialogue management: an RL manager picks, each turn, one of several experts' candidate utterances to maximise
a simulated user's satisfaction over the whole conversation (MoE-LM dialogue management; dynamic planning in
open-ended dialogue; an ICER-style behaviourally consistent user simulator). One job per module:

* :mod:`~rlcore.adapters.dialogue.language`: the vocabulary, the language layer (acts to words) and the parser;
* :mod:`~rlcore.adapters.dialogue.simulator`: :class:`DialogueConfig`, the latent user state and behaviour model;
* :mod:`~rlcore.adapters.dialogue.conversation`: the dialogue-state tracker over what was said;
* :mod:`~rlcore.adapters.dialogue.experts`: the :class:`Expert` interface and the template experts;
* :mod:`~rlcore.adapters.dialogue.moe_lm`: the mixture-of-experts language model, trained and cached;
* :mod:`~rlcore.adapters.text` (shared): all-MiniLM-L6-v2 history and utterance embeddings (``text`` extra);
* :mod:`~rlcore.adapters.dialogue.env`: :class:`DialogueEnv` (``Dialogue-v0``), the batched environment;
* :mod:`~rlcore.adapters.dialogue.networks`: the (state, candidate) pair network;
* :mod:`~rlcore.adapters.dialogue.ppo` and :mod:`~rlcore.adapters.dialogue.q`: the PPO and Q managers;
* :mod:`~rlcore.adapters.dialogue.baselines`: uniform, greedy oracle, fixed expert;
* :mod:`~rlcore.adapters.dialogue.api`: :func:`train_manager`, :func:`evaluate`, :func:`sample_conversation`;
  :mod:`~rlcore.adapters.dialogue.cli`: ``rlcore train dialogue`` and ``rlcore eval`` of dialogue runs.
"""

from rlcore.adapters.dialogue.api import METHODS, evaluate, sample_conversation, train_manager
from rlcore.adapters.dialogue.baselines import FixedExpert, GreedyOracle, Uniform
from rlcore.adapters.dialogue.conversation import Conversation, parse_user
from rlcore.adapters.dialogue.env import DialogueEnv
from rlcore.adapters.dialogue.experts import Expert, TemplateExpert, moe_experts, template_experts
from rlcore.adapters.dialogue.language import INTENTS, TOPICS, detokenize, parse_bot, render_bot, render_user
from rlcore.adapters.dialogue.moe_lm import MoEHeadExpert, MoELM, MoELMConfig, load_moe_lm, train_moe_lm
from rlcore.adapters.dialogue.ppo import DialoguePPOAgent, DialoguePPOConfig
from rlcore.adapters.dialogue.q import DialogueQAgent, DialogueQConfig
from rlcore.adapters.dialogue.simulator import REWARDS, DialogueConfig, UserSimulator, UserState

__all__ = ["INTENTS", "METHODS", "REWARDS", "TOPICS", "Conversation", "DialogueConfig", "DialogueEnv",
           "DialoguePPOAgent", "DialoguePPOConfig", "DialogueQAgent", "DialogueQConfig", "Expert", "FixedExpert",
           "GreedyOracle", "MoEHeadExpert", "MoELM", "MoELMConfig", "TemplateExpert", "Uniform", "UserSimulator",
           "UserState", "detokenize", "evaluate", "load_moe_lm", "moe_experts", "parse_bot", "parse_user",
           "render_bot", "render_user", "sample_conversation", "template_experts", "train_manager", "train_moe_lm"]
