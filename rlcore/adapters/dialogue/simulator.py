"""The user simulator, in the ICER spirit: a latent user state, a behaviour model that decides what the user does,
and the language layer (:mod:`~rlcore.adapters.dialogue.language`) that says it.

**Latent state** of each user (``[N, ...]`` tensors, :class:`UserState`): ``interest [T]`` in ``[0, 1]`` over the
topics (exactly 0 for topics it does not care about; at least one topic is liked), the current topic,
``patience``, ``satisfaction`` in ``[0, max_satisfaction]``, ``recommended [T]`` (recommendations made per topic),
``stated [T]`` (the level it has said about each topic, -1 for not yet), ``frustrated`` and the turn.

**Behaviour model** (:meth:`UserSimulator.respond`), for the bot act ``(intent, topic, item)`` understood from
the bot's utterance; ``I`` is the user's interest, ``c`` the topic the act is about (a recommendation, a topic
change or chit-chat moves the conversation to its topic):

==================  ==============================================================  ==========================
act                 immediate satisfaction change ``r``                             reply
==================  ==============================================================  ==========================
ask                 −0.1, and the user states its favourite topic not yet stated;   state_preference
                    −0.5 and frustration when all are stated                        (annoyed)
recommend           ``I[c] = 0``: −1 and frustration; else accepted with            reject_topic / accept /
                    probability ``0.3 + 0.7 I[c]`` for ``g = 2 I[c] 0.75^k`` (k =   decline
                    earlier recommendations in ``c``), 0 if declined
empathise           +0.3 and patience +2 when frustrated, else −0.05                thanks / shrug
change_topic        0, or −0.3 to a topic it does not care about                    agree_topic
stay_on_topic       ``0.3 I[c] − 0.1``; one earlier recommendation in ``c`` is      chat
                    forgotten (novelty comes back)
unreadable          −0.2                                                            confused
==================  ==============================================================  ==========================

Every turn costs one unit of patience, two while the user is frustrated and not comforted; an accepted
recommendation gives back its gain ``g``. The user **leaves** (the episode terminates) when its patience or
its satisfaction reaches 0; the conversation is cut after ``episode_length`` bot turns. The reward of a turn
is the change in satisfaction (:data:`REWARDS` lists the alternatives).

Consistency, by construction and tested: a topic of interest 0 never raises satisfaction; satisfaction stays
in its range; whatever the user says about a topic (a stated level: "i love", "is ok", "not into", "do not
care", "rather not") is the level of its latent interest; the same latent state, act and generator state give
the same reply.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch

from rlcore.adapters.dialogue import language as L

REWARDS = ("satisfaction", "accepted")
"""``satisfaction``: the change in satisfaction (default); ``accepted``: 1 per accepted recommendation."""
Reward = Literal["satisfaction", "accepted"]
HISTORY_ENCODERS = ("learned", "tracker", "moe", "minilm")
"""Accepted values of ``DialogueConfig.history_encoder``."""


@dataclass
class DialogueConfig:
    """Everything that defines the dialogue task (``DialogueEnv`` adds ``num_envs``, ``seed`` and ``device``)."""

    experts: Literal["template", "moe"] = "template"
    """Candidate generators: the template experts, or the MoE-LM's expert heads (trained and cached)."""
    history_encoder: Literal["learned", "tracker", "moe", "minilm"] = "learned"
    """History embedding: 'learned' (the dialogue-state tracker's features joined with the MoE-LM's learned
    encoding of the last exchange), 'tracker' (the features alone), 'moe' (the learned encoding alone) or
    'minilm' (all-MiniLM-L6-v2 of the transcript; needs the `text` extra)."""
    num_topics: int = 6
    """Topics users have interests over (at most 6, the vocabulary's)."""
    episode_length: int = 20
    """Bot turns before a conversation is cut (truncation)."""
    reward: Reward = "satisfaction"
    """Reward of a turn: 'satisfaction' (its change) or 'accepted' (1 per accepted recommendation)."""
    liked_fraction: float = 0.5
    """Probability that a user cares about a topic (interest > 0); every user likes at least one."""
    initial_satisfaction: float = 2.0
    """Satisfaction of a new user."""
    max_satisfaction: float = 20.0
    """Satisfaction is kept in [0, max_satisfaction]."""
    patience_low: float = 4.0
    """A new user's patience is uniform in [patience_low, patience_high] turns."""
    patience_high: float = 8.0
    """See patience_low."""
    love_threshold: float = 0.6
    """Interest at or above which a user says it loves a topic (below it: 'is ok'; 0: 'not into')."""

    def validate(self) -> None:
        """Raise a ``ValueError`` naming the first bad field, what is accepted, and how to fix it."""
        if self.experts not in ("template", "moe"):
            raise ValueError(f"experts must be 'template' or 'moe', got {self.experts!r}.")
        if self.history_encoder not in HISTORY_ENCODERS:
            raise ValueError(f"history_encoder must be one of {', '.join(map(repr, HISTORY_ENCODERS))}; got "
                             f"{self.history_encoder!r}.")
        if not isinstance(self.num_topics, int) or not 2 <= self.num_topics <= len(L.TOPICS):
            raise ValueError(f"num_topics must be an integer in [2, {len(L.TOPICS)}], got {self.num_topics!r}.")
        if not isinstance(self.episode_length, int) or self.episode_length < 1:
            raise ValueError(f"episode_length must be an integer >= 1, got {self.episode_length!r}.")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {', '.join(map(repr, REWARDS))}; got {self.reward!r}.")
        if not 0 < self.liked_fraction <= 1:
            raise ValueError(f"liked_fraction must be in (0, 1], got {self.liked_fraction!r}.")
        if not 0 < self.initial_satisfaction <= self.max_satisfaction:
            raise ValueError(f"need 0 < initial_satisfaction <= max_satisfaction, got {self.initial_satisfaction} "
                             f"and {self.max_satisfaction}.")
        if not 0 < self.patience_low <= self.patience_high:
            raise ValueError(f"need 0 < patience_low <= patience_high, got {self.patience_low} and "
                             f"{self.patience_high}.")
        if not 0 < self.love_threshold <= 1:
            raise ValueError(f"love_threshold must be in (0, 1], got {self.love_threshold!r}.")

    def key(self) -> tuple:
        """The fields that fix the task a manager was trained on."""
        return tuple(getattr(self, f.name) for f in fields(self))


@dataclass
class UserState:
    """The latent state of ``N`` users (see the module docstring); every field is a ``[N, ...]`` tensor."""

    interest: torch.Tensor
    topic: torch.Tensor
    patience: torch.Tensor
    satisfaction: torch.Tensor
    recommended: torch.Tensor
    stated: torch.Tensor
    frustrated: torch.Tensor

    def clone(self) -> UserState:
        return UserState(*(getattr(self, f.name).clone() for f in fields(self)))

    def where(self, rows: torch.Tensor, other: UserState) -> UserState:
        """``other`` on ``rows``, ``self`` elsewhere."""
        def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.where(rows.reshape(-1, *([1] * (a.dim() - 1))), b, a)

        return UserState(*(pick(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)))

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name).clone() for f in fields(self)}


@dataclass
class Reply:
    """What users did in one turn: the reply act, its topic, item and stated level (-1 where none), the reward
    and whether the user left."""

    act: torch.Tensor
    topic: torch.Tensor
    item: torch.Tensor
    level: torch.Tensor
    satisfaction_change: torch.Tensor
    accepted: torch.Tensor
    left: torch.Tensor

    def tokens(self) -> torch.Tensor:
        """The reply's words (the language layer)."""
        return L.render_user(self.act, self.topic, self.item, self.level)


class UserSimulator:
    """Samples users and plays the behaviour model (see the module docstring). Pure: the state is passed in."""

    def __init__(self, config: DialogueConfig) -> None:
        config.validate()
        self.config = config

    def level(self, interest: torch.Tensor) -> torch.Tensor:
        """The level a user states for an interest: 0 none, 1 some, 2 love."""
        return torch.where(interest <= 0, 0, torch.where(interest >= self.config.love_threshold, 2, 1))

    def sample(self, n: int, generator: torch.Generator) -> UserState:
        """``n`` new users: interests, an opening topic (one they like), patience, satisfaction."""
        c, device = self.config, generator.device
        t = c.num_topics
        liked = torch.rand(n, t, generator=generator, device=device) < c.liked_fraction
        forced = torch.randint(0, t, (n,), generator=generator, device=device)
        liked |= torch.nn.functional.one_hot(forced, t).bool() & ~liked.any(1, keepdim=True)
        interest = torch.where(liked, 0.1 + 0.9 * torch.rand(n, t, generator=generator, device=device), 0.0)
        # The user opens on a topic it cares about, not necessarily its favourite.
        opening = torch.multinomial(liked.float(), 1, generator=generator).squeeze(1)
        patience = c.patience_low + (c.patience_high - c.patience_low) * torch.rand(n, generator=generator,
                                                                                    device=device)
        stated = torch.full((n, t), -1, dtype=torch.long, device=device)
        return UserState(interest=interest, topic=opening, patience=patience,
                         satisfaction=torch.full((n,), c.initial_satisfaction, device=device),
                         recommended=torch.zeros(n, t, device=device), stated=stated,
                         frustrated=torch.zeros(n, dtype=torch.bool, device=device))

    def opening(self, state: UserState) -> Reply:
        """The users' first utterance: hello, about their opening topic."""
        n, device = state.topic.shape[0], state.topic.device
        minus = torch.full((n,), -1, dtype=torch.long, device=device)
        zero = torch.zeros(n, device=device)
        return Reply(torch.full((n,), L.HELLO, dtype=torch.long, device=device), state.topic.clone(), minus, minus,
                     zero, torch.zeros(n, dtype=torch.bool, device=device), torch.zeros(n, dtype=torch.bool,
                                                                                      device=device))

    def _effects(self, state: UserState, intent: torch.Tensor, topic: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parts of the behaviour model that need no randomness, for acts ``[N, ...]`` (broadcast over a
        candidate dimension): the act's topic, the interest in it, the recommendation's gain and acceptance
        probability, and the satisfaction change of every outcome."""
        c = self.config
        extra = intent.dim() - 1
        def expand(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], *([1] * extra), *x.shape[1:])

        about = torch.where(topic >= 0, topic, expand(state.topic)).clamp(max=c.num_topics - 1)
        interest = expand(state.interest).expand(*about.shape, -1).gather(-1, about.unsqueeze(-1)).squeeze(-1)
        recs = expand(state.recommended).expand(*about.shape, -1).gather(-1, about.unsqueeze(-1)).squeeze(-1)
        gain = 2.0 * interest * 0.75 ** recs
        p_accept = torch.where(interest > 0, 0.3 + 0.7 * interest, 0.0)
        all_stated = expand((state.stated[:, : c.num_topics] >= 0).all(1))
        frustrated = expand(state.frustrated)
        ask = torch.where(all_stated, -0.5, -0.1)
        recommend_fail = torch.where(interest > 0, 0.0, -1.0)
        empathise = torch.where(frustrated, 0.3, -0.05)
        change = torch.where(interest > 0, 0.0, -0.3)
        stay = 0.3 * interest - 0.1
        sure = torch.full_like(interest, -0.2)
        # r_fail: the change if the act does not succeed (everything but an accepted recommendation).
        r_fail = torch.where(intent == L.ASK, ask, sure)
        r_fail = torch.where(intent == L.RECOMMEND, recommend_fail, r_fail)
        r_fail = torch.where(intent == L.EMPATHISE, empathise, r_fail)
        r_fail = torch.where(intent == L.CHANGE_TOPIC, change, r_fail)
        r_fail = torch.where(intent == L.STAY, stay, r_fail)
        p = torch.where(intent == L.RECOMMEND, p_accept, 0.0)
        return {"about": about, "interest": interest, "gain": gain, "p_accept": p, "r_fail": r_fail,
                "all_stated": all_stated}

    def expected_change(self, state: UserState, intent: torch.Tensor, topic: torch.Tensor) -> torch.Tensor:
        """Expected immediate satisfaction change of acts ``[N, K]`` (before clipping to the range): what the
        one-step greedy oracle maximises."""
        e = self._effects(state, intent, topic)
        return e["p_accept"] * e["gain"] + (1 - e["p_accept"]) * e["r_fail"]

    def respond(self, state: UserState, intent: torch.Tensor, topic: torch.Tensor, item: torch.Tensor,
                generator: torch.Generator) -> tuple[UserState, Reply]:
        """The behaviour model for one bot act per user ``[N]``: the new latent state and the reply."""
        c = self.config
        n, device = intent.shape[0], intent.device
        e = self._effects(state, intent, topic)
        about, interest = e["about"], e["interest"]
        draw = torch.rand(n, generator=generator, device=device)  # drawn for every row: the stream never depends
        accepted = (intent == L.RECOMMEND) & (draw < e["p_accept"])  # on which rows recommend
        change = torch.where(accepted, e["gain"], e["r_fail"])
        rows = torch.arange(n, device=device)
        s = state.clone()
        topical = (intent == L.RECOMMEND) | (intent == L.CHANGE_TOPIC) | (intent == L.STAY)
        s.topic = torch.where(topical, about, state.topic)
        level_about = self.level(interest)

        # The reply act, and what it states.
        minus = torch.full((n,), -1, dtype=torch.long, device=device)
        reply = torch.full((n,), L.CONFUSED, dtype=torch.long, device=device)
        reply_topic, reply_item, reply_level = minus.clone(), minus.clone(), minus.clone()
        # ask: the favourite topic not yet stated.
        unstated = state.stated[:, : c.num_topics] < 0
        favourite = state.interest.masked_fill(~unstated, -1.0).argmax(1)
        is_ask = intent == L.ASK
        asked_ok = is_ask & ~e["all_stated"]
        reply = torch.where(is_ask, torch.where(asked_ok, L.STATE, L.ANNOYED), reply)
        reply_topic = torch.where(asked_ok, favourite, reply_topic)
        reply_level = torch.where(asked_ok, self.level(state.interest[rows, favourite]), reply_level)
        # recommend
        is_rec = intent == L.RECOMMEND
        liked = interest > 0
        reply = torch.where(is_rec, torch.where(liked, torch.where(accepted, L.ACCEPT, L.DECLINE), L.REJECT_TOPIC),
                            reply)
        reply_topic = torch.where(is_rec, about, reply_topic)
        reply_item = torch.where(is_rec, item, reply_item)
        reply_level = torch.where(is_rec & ~liked, 0, reply_level)
        # empathise
        is_emp = intent == L.EMPATHISE
        reply = torch.where(is_emp, torch.where(state.frustrated, L.THANKS, L.SHRUG), reply)
        # change topic: agreeing says nothing about the level, refusing says "rather not" (level 0).
        is_change = intent == L.CHANGE_TOPIC
        reply = torch.where(is_change, L.AGREE_TOPIC, reply)
        reply_topic = torch.where(is_change, about, reply_topic)
        reply_level = torch.where(is_change & ~liked, 0, reply_level)
        # stay on topic: chat that states the level.
        is_stay = intent == L.STAY
        reply = torch.where(is_stay, L.CHAT, reply)
        reply_topic = torch.where(is_stay, about, reply_topic)
        reply_level = torch.where(is_stay, level_about, reply_level)

        # State updates.
        onehot = torch.nn.functional.one_hot(about, state.interest.shape[1]).float()
        s.recommended = torch.where(is_rec[:, None], state.recommended + onehot, state.recommended)
        s.recommended = torch.where(is_stay[:, None], (s.recommended - onehot).clamp(min=0), s.recommended)
        said = reply_level >= 0
        stated_topic = reply_topic.clamp(min=0)
        s.stated = s.stated.clone()
        s.stated[rows[said], stated_topic[said]] = reply_level[said]
        cost = 1.0 + (state.frustrated & ~is_emp).float()
        s.patience = state.patience - cost + torch.where(accepted, e["gain"], 0.0) + torch.where(
            is_emp & state.frustrated, 2.0, 0.0) + torch.where(is_stay & (level_about == 2), 0.5, 0.0)
        s.frustrated = torch.where(is_emp, False, state.frustrated) | (is_rec & ~liked) | (is_ask & ~asked_ok)
        s.satisfaction = (state.satisfaction + change).clamp(0.0, c.max_satisfaction)
        satisfaction_change = s.satisfaction - state.satisfaction
        left = (s.patience <= 0) | (s.satisfaction <= 0)
        reply = torch.where(left, L.BYE, reply)
        reply_level = torch.where(left, -1, reply_level)
        # The stated level is recorded even when the user leaves, but it is not said: only a said level counts.
        s.stated = torch.where(left[:, None], state.stated, s.stated)
        return s, Reply(reply, reply_topic, reply_item, reply_level, satisfaction_change, accepted, left)


__all__ = ["HISTORY_ENCODERS", "REWARDS", "DialogueConfig", "Reply", "UserSimulator", "UserState"]
