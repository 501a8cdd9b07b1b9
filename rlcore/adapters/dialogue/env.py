"""``Dialogue-v0``: a batch of conversations where, each turn, a dialogue manager picks one of the experts' candidate
utterances, and a simulated user answers.

One episode is one user (:mod:`~rlcore.adapters.dialogue.simulator`). The user opens; each bot turn every expert
proposes a candidate utterance for the conversation so far (:mod:`~rlcore.adapters.dialogue.experts`), the
manager picks one by index, the simulator understands it (the language layer's parser), updates the user's
latent state and replies. The reward is the change in the user's satisfaction; the episode **terminates** when
the user leaves and is **truncated** after ``episode_length`` bot turns.

Observations are a dict (``N`` rows, ``K`` experts) that follows the candidate-set spec
(:class:`~rlcore.envs.spaces.CandidateSet`)::

    history          [N, H]        the history embedding (the tracker's features, the MoE-LM's encoder or MiniLM)
    turn             [N, 1]        bot turns so far / episode_length
    candidates       [N, K, D]     the candidate utterances' embeddings (bag of words, or MiniLM)
    candidate_mask   [N, K] bool   the experts that proposed something (an abstaining one is masked out)

Actions are ``[N]`` int64 candidate indices on offer; anything else is a ``ValueError`` naming the rows. The
step's ``info`` has the contract's ``final_obs`` and ``applied_actions``, the chosen ``intent``, and on the rows
that ended ``episode_metrics``: ``episode_length`` (bot turns), ``accepted`` (recommendations accepted),
``satisfaction`` (final) and ``left`` (1 if the user left before the cut). ``env.expected_rewards()`` is the
simulator's expected immediate reward of every candidate on offer (what the one-step greedy oracle uses; a
manager never sees it). With ``record=True`` the env keeps each conversation's text in ``env.transcripts``.

Seeding: the users come from the env's generator, seeded by ``seed`` at construction and by ``reset(seed=...)``;
the experts and the simulator's rules are fixed, so held-out users are a reset seed away.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlcore.adapters.dialogue import language as L
from rlcore.adapters.dialogue.conversation import Conversation, feature_dim
from rlcore.adapters.dialogue.experts import Expert, moe_experts, template_experts
from rlcore.adapters.dialogue.simulator import DialogueConfig, UserSimulator, UserState
from rlcore.envs.spaces import CandidateSet, check_actions
from rlcore.envs.structured import where_rows


class DialogueEnv:
    """``num_envs`` conversations stepped as tensors on ``device`` (see the module docstring).

    Args:
        num_envs: conversations (users) in parallel.
        seed: seed of the users' generator (training users; evaluations reset it with held-out seeds).
        device: where observations, rewards and flags live.
        experts: the candidate generators: ``"template"``, ``"moe"`` (the config's ``experts`` field), or a list of
            :class:`~rlcore.adapters.dialogue.experts.Expert` (such an env cannot be rebuilt from a config by
            ``rlcore eval``).
        record: keep the text of every conversation (slow; for reading sample conversations).
        **config: any :class:`~rlcore.adapters.dialogue.simulator.DialogueConfig` field (``experts``,
            ``episode_length``, ``reward``, ``history_encoder``...).
    """

    env_id = "Dialogue-v0"

    def __init__(self, num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu",
                 experts: str | list[Expert] = "template", record: bool = False, **config: Any) -> None:
        known = {f.name for f in fields(DialogueConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"DialogueEnv got unknown argument(s) {unknown}; accepted: num_envs, seed, device, "
                             f"experts (a list), record and the DialogueConfig fields {sorted(known)}.")
        if isinstance(experts, str):
            config["experts"], experts = experts, None
        elif experts is None:
            raise ValueError("experts must be 'template', 'moe' or a list of Expert objects, got None.")
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}.")
        self.config = DialogueConfig(**config)
        self.config.validate()
        self.num_envs, self.device, self.seed = int(num_envs), torch.device(device), int(seed)
        self.simulator = UserSimulator(self.config)
        self.custom_experts = experts is not None
        self.moe_model = None
        if experts is None:
            experts = template_experts() if self.config.experts == "template" else moe_experts(self._moe())
        if not experts or not all(isinstance(e, Expert) for e in experts):
            raise ValueError("experts must be a non-empty list of Expert objects (name, intent, propose(conversation)"
                             " -> (tokens [N, MAX_LEN], available [N])).")
        self.experts = list(experts)
        self.expert_names = [e.name for e in self.experts]
        self.text_encoder = None
        if self.config.history_encoder == "minilm":
            from rlcore.adapters.text import MiniLMEncoder

            self.text_encoder = MiniLMEncoder(self.device, purpose="history_encoder='minilm'",
                                              alternative=", or use history_encoder='learned' or 'tracker'")
        elif self.config.history_encoder in ("learned", "moe"):
            self.moe_model = self._moe().to(self.device)
        self.record = record or self.text_encoder is not None
        c, k = self.config, len(self.experts)
        tracker_dim = feature_dim(c.num_topics)
        if self.text_encoder is not None:
            self.history_dim = self.text_encoder.dim
        elif self.moe_model is None:
            self.history_dim = tracker_dim
        else:
            self.history_dim = self.moe_model.config.latent_dim + (tracker_dim if c.history_encoder == "learned" else 0)
        self.embedding_dim = self.text_encoder.dim if self.text_encoder is not None else len(L.VOCAB)
        self.action_set = None
        self.action_space = CandidateSet(k, self.embedding_dim)
        self.observation_space = gym.spaces.Dict({
            "history": gym.spaces.Box(-np.inf, np.inf, (self.history_dim,), np.float32),
            "turn": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
            "candidates": gym.spaces.Box(-1.0, 1.0, (k, self.embedding_dim), np.float32),
            "candidate_mask": gym.spaces.Box(0, 1, (k,), np.bool_)})
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.transcripts: list[list[str]] = [[] for _ in range(self.num_envs)]
        self.finished_transcripts: list[list[str]] = []
        self._start(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))

    def _moe(self) -> Any:
        """The trained MoE-LM of this task's topics and turn limit (trained on first use, then cached)."""
        from rlcore.adapters.dialogue.moe_lm import MoELMConfig, load_moe_lm

        return load_moe_lm(MoELMConfig(num_topics=self.config.num_topics, episode_length=self.config.episode_length))

    @property
    def obs_dim(self) -> int:
        return self.history_dim + 1 + len(self.experts) * (self.embedding_dim + 1)

    @property
    def action_dim(self) -> int:
        return len(self.experts)

    # ------------------------------------------------------------------ candidates and observations
    def _propose(self, conversation: Conversation) -> tuple[torch.Tensor, torch.Tensor]:
        """Every expert's candidate ``[N, K, MAX_LEN]`` and the mask of those on offer ``[N, K]``."""
        tokens, mask = zip(*(expert.propose(conversation) for expert in self.experts), strict=True)
        tokens, mask = torch.stack(tokens, 1).to(self.device).long(), torch.stack(mask, 1).to(self.device).bool()
        # A conversation where every expert abstained still offers something: the last expert's utterance.
        nothing = ~mask.any(1)
        return tokens, mask | (nothing[:, None] & (torch.arange(mask.shape[1], device=self.device) ==
                                                   mask.shape[1] - 1))

    def _history(self) -> torch.Tensor:
        if self.text_encoder is not None:
            return self.text_encoder.encode([" ".join(t[-8:]) for t in self.transcripts])
        features = self._conv.features(self.config.episode_length)
        if self.moe_model is not None:
            with torch.no_grad():
                z = self.moe_model.encode(self._conv, self.config.episode_length)
            return torch.cat([features, z], dim=1) if self.config.history_encoder == "learned" else z
        return features

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.text_encoder is not None:
            n, k, _ = tokens.shape
            texts = [L.detokenize(row) for row in tokens.reshape(n * k, -1)]
            return self.text_encoder.encode(texts).reshape(n, k, -1)
        return L.bag_of_words(tokens)

    def _obs(self) -> dict[str, torch.Tensor]:
        return {"history": self._history(),
                "turn": (self._conv.turn.float() / self.config.episode_length)[:, None],
                "candidates": self._embed(self._tokens), "candidate_mask": self._mask.clone()}

    def _start(self, rows: torch.Tensor) -> None:
        """New users and conversations on ``rows``; draws for every row, so the generator advances the same way
        whichever rows end."""
        users = self.simulator.sample(self.num_envs, self.generator)
        opening = self.simulator.opening(users)
        conv = Conversation.start(users.topic, opening.tokens(), self.config.num_topics)
        if rows.all():
            self._users, self._conv = users, conv
        else:
            self._users, self._conv = self._users.where(rows, users), self._conv.where(rows, conv)
        self._tokens, self._mask = self._propose(self._conv) if rows.all() else (self._tokens, self._mask)
        if not rows.all():
            tokens, mask = self._propose(self._conv)
            self._tokens = torch.where(rows[:, None, None], tokens, self._tokens)
            self._mask = torch.where(rows[:, None], mask, self._mask)
        self._accepted = (torch.zeros(self.num_envs, device=self.device) if rows.all()
                          else self._accepted.masked_fill(rows, 0.0))
        if self.record:
            for i in rows.nonzero().flatten().tolist():
                self.transcripts[i] = [f"user: {L.detokenize(conv.user_tokens[i])}"]

    def candidate_texts(self, row: int = 0) -> list[tuple[str, str, bool]]:
        """``(expert name, utterance, on offer)`` of every candidate of conversation ``row`` this turn."""
        if not 0 <= row < self.num_envs:
            raise ValueError(f"row must be in [0, num_envs) = [0, {self.num_envs}), got {row}.")
        return [(name, L.detokenize(self._tokens[row, k]), bool(self._mask[row, k]))
                for k, name in enumerate(self.expert_names)]

    def expected_rewards(self) -> torch.Tensor:
        """The simulator's expected immediate reward of every candidate on offer, ``[N, K]`` (−inf where masked):
        the one-step greedy oracle's view of the latent user, which no manager gets."""
        intent, topic, _ = L.parse_bot(self._tokens)
        if self.config.reward == "accepted":
            value = self.simulator._effects(self._users, intent, topic)["p_accept"]
        else:
            value = self.simulator.expected_change(self._users, intent, topic)
        return value.masked_fill(~self._mask, -torch.inf)

    # ------------------------------------------------------------------ the batched-env contract
    def reset(self, seed: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._start(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._obs(), {}

    def step(self, actions: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor,
                                                   torch.Tensor, dict[str, Any]]:
        check_actions(actions, self.action_space, self.num_envs, {"candidate_mask": self._mask})
        actions = actions.to(self.device).long()
        rows = torch.arange(self.num_envs, device=self.device)
        said = self._tokens[rows, actions]  # [N, MAX_LEN]
        intent, topic, item = L.parse_bot(said)
        topic = torch.where(topic < self.config.num_topics, topic, -1)
        self._users, reply = self.simulator.respond(self._users, intent, topic, item, self.generator)
        reply_tokens = reply.tokens()
        self._conv = self._conv.update(said, reply_tokens)
        self._accepted += reply.accepted.float()
        reward = reply.satisfaction_change if self.config.reward == "satisfaction" else reply.accepted.float()
        terminated = reply.left
        truncated = (self._conv.turn >= self.config.episode_length) & ~terminated
        done = terminated | truncated
        metrics = {"episode_length": self._conv.turn.float(), "accepted": self._accepted.clone(),
                   "satisfaction": self._users.satisfaction.clone(), "left": terminated.float()}
        if self.record:
            for i in range(self.num_envs):
                self.transcripts[i] += [f"bot ({self.expert_names[int(actions[i])]}): {L.detokenize(said[i])}",
                                        f"user: {L.detokenize(reply_tokens[i])}"]
                if done[i]:
                    self.finished_transcripts.append(self.transcripts[i])
        self._tokens, self._mask = self._propose(self._conv)
        final_obs = self._obs()
        if done.any():  # same-step auto-reset: final_obs keeps the ended conversations' last observation
            self._start(done)
            obs = where_rows(done, self._obs(), final_obs)
        else:
            obs = final_obs
        info = {"final_obs": final_obs, "applied_actions": actions, "intent": intent, "episode_metrics": metrics}
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Nothing to release: the state is a few tensors."""

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "num_envs": self.num_envs, "config": asdict(self.config),
                "experts": list(self.expert_names), "users": self._users.as_dict(),
                "conversation": self._conv.as_dict(),
                "tokens": self._tokens.clone(), "mask": self._mask.clone(), "accepted": self._accepted.clone(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("env_id") != self.env_id or state.get("num_envs") != self.num_envs:
            raise ValueError(f"environment state is for {state.get('num_envs')} x {state.get('env_id')}, this "
                             f"environment is {self.num_envs} x {self.env_id}.")
        if state.get("config") != asdict(self.config) or state.get("experts") != self.expert_names:
            raise ValueError("environment state is from another dialogue task (config or experts differ); build the "
                             "env with the same DialogueConfig and experts.")
        self._users = UserState(**{k: v.to(self.device).clone() for k, v in state["users"].items()})
        self._conv = Conversation.from_dict(state["conversation"], self.device)
        self._tokens, self._mask = state["tokens"].to(self.device).clone(), state["mask"].to(self.device).clone()
        self._accepted = state["accepted"].to(self.device).clone()
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        c = self.config
        experts = "custom" if self.custom_experts else c.experts
        return (f"DialogueEnv(num_envs={self.num_envs}, seed={self.seed}, experts={experts!r}, "
                f"history_encoder={c.history_encoder!r}, reward={c.reward!r}, episode_length={c.episode_length}, "
                f"device={self.device})")


__all__ = ["DialogueEnv"]
