"""Experts: generators that each propose one candidate utterance per conversation, with a distinct intent.

The interface is :class:`Expert`: ``name``, ``intent`` (an index into
:data:`~rlcore.adapters.dialogue.language.INTENTS`, or None for an expert of no fixed intent) and
``propose(conversation) -> (tokens [N, MAX_LEN], available [N] bool)``; an expert that has nothing sensible
to say in a conversation abstains there (``available`` False, and the candidate is masked out). Any object
with these members plugs into :class:`~rlcore.adapters.dialogue.env.DialogueEnv` (``experts=[...]``).

Two families ship:

* :func:`template_experts`: one :class:`TemplateExpert` per intent, writing the language layer's template
  with the act's arguments read off the conversation (the next item of the current topic; the best topic the
  user has said it likes, else the next one not yet discussed);
* :func:`moe_experts`: the expert heads of a small mixture-of-experts language model trained on the
  simulator's own dialogues (:mod:`~rlcore.adapters.dialogue.moe_lm`).

Both abstain by the same rule (:func:`available`): ask once every topic's level is known, change topic when
there is no topic left worth moving to.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from rlcore.adapters.dialogue import language as L
from rlcore.adapters.dialogue.conversation import Conversation


@runtime_checkable
class Expert(Protocol):
    """A generator of one candidate utterance per conversation (see the module docstring)."""

    name: str
    intent: int | None

    def propose(self, conversation: Conversation) -> tuple[torch.Tensor, torch.Tensor]: ...


def change_target(conversation: Conversation) -> torch.Tensor:
    """The topic a topic change moves to: the topic with the highest stated level other than the current one
    (ties: the lowest index), else the next topic after the current one whose level is unknown; -1 if none."""
    c = conversation
    t = c.stated.shape[1]
    index = torch.arange(t, device=c.stated.device)
    other = index[None] != c.topic[:, None]
    liked = (c.stated > 0) & other
    score = torch.where(liked, c.stated * 100 - index[None], -1_000)
    best_liked = score.argmax(1)
    unknown = (c.stated < 0) & other
    distance = (index[None] - c.topic[:, None]) % t  # 1, 2, ... after the current topic
    next_unknown = torch.where(unknown, distance, t + 1).argmin(1)
    target = torch.where(liked.any(1), best_liked, torch.where(unknown.any(1), next_unknown, -1))
    return target


def available(intent: int, conversation: Conversation) -> torch.Tensor:
    """Whether an expert of ``intent`` has something to propose in each conversation ``[N]``."""
    n = conversation.topic.shape[0]
    if intent == L.ASK:
        return (conversation.stated < 0).any(1)
    if intent == L.CHANGE_TOPIC:
        return change_target(conversation) >= 0
    return torch.ones(n, dtype=torch.bool, device=conversation.topic.device)


def act_arguments(intent: int, conversation: Conversation) -> tuple[torch.Tensor, torch.Tensor]:
    """``(topic, item)`` of the template act of ``intent`` in each conversation (-1 where unused)."""
    c = conversation
    minus = torch.full_like(c.topic, -1)
    if intent == L.RECOMMEND:
        said = c.said_recommendations.gather(1, c.topic[:, None]).squeeze(1)
        return c.topic, said % L.ITEMS_PER_TOPIC
    if intent == L.CHANGE_TOPIC:
        return change_target(c).clamp(min=0), minus
    if intent == L.STAY:
        return c.topic, minus
    return minus, minus


class TemplateExpert:
    """The expert of one intent that writes the language layer's template (see the module docstring).

    Args:
        intent: the intent's name (one of :data:`~rlcore.adapters.dialogue.language.INTENTS`) or index.
    """

    def __init__(self, intent: str | int) -> None:
        self.intent = intent_index(intent)
        self.name = L.INTENTS[self.intent]

    def propose(self, conversation: Conversation) -> tuple[torch.Tensor, torch.Tensor]:
        topic, item = act_arguments(self.intent, conversation)
        intent = torch.full_like(conversation.topic, self.intent)
        return L.render_bot(intent, topic, item), available(self.intent, conversation)

    def __repr__(self) -> str:
        return f"TemplateExpert({self.name!r})"


def intent_index(intent: str | int) -> int:
    """The index of an intent given by name or index; a ``ValueError`` lists the intents otherwise."""
    if isinstance(intent, str) and intent in L.INTENTS:
        return L.INTENTS.index(intent)
    if isinstance(intent, int) and not isinstance(intent, bool) and 0 <= intent < len(L.INTENTS):
        return intent
    raise ValueError(f"unknown intent {intent!r}; intents: {', '.join(L.INTENTS)}.")


def template_experts() -> list[TemplateExpert]:
    """One template expert per intent, in the order of :data:`~rlcore.adapters.dialogue.language.INTENTS`."""
    return [TemplateExpert(i) for i in range(len(L.INTENTS))]


def moe_experts(model: object | None = None) -> list[Expert]:
    """The expert heads of a trained MoE-LM (None: the default one, trained on first use and cached)."""
    from rlcore.adapters.dialogue.moe_lm import MoEHeadExpert, load_moe_lm

    model = load_moe_lm() if model is None else model
    return [MoEHeadExpert(model, i) for i in range(len(L.INTENTS))]


__all__ = ["Expert", "TemplateExpert", "act_arguments", "available", "change_target", "intent_index", "moe_experts",
           "template_experts"]
