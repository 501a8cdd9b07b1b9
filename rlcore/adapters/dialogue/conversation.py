"""What a batch of conversations has said so far: the dialogue-state tracker that experts and managers read.

A :class:`Conversation` holds, per conversation (``[N, ...]`` tensors), only what can be read off the words said
(never the user's latent state): the current topic, the level the user has stated for each topic (-1 for not
yet), the recommendations made per topic (less one per later chit-chat on it: what the user has said it still
wants to hear about), the user's last reply act, the bot's last intent, the turn, and the last bot and user
utterances' tokens. :meth:`Conversation.features` is the tracker's history embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from rlcore.adapters.dialogue import language as L


@dataclass
class Conversation:
    """The tracked state of ``N`` conversations (see the module docstring)."""

    topic: torch.Tensor
    """[N] the topic being talked about."""
    stated: torch.Tensor
    """[N, T] the level the user stated for each topic (0 none, 1 some, 2 love), -1 if not stated."""
    recommended: torch.Tensor
    """[N, T] recommendations made in each topic, less chit-chat since."""
    said_recommendations: torch.Tensor
    """[N, T] recommendations made in each topic (which item comes next)."""
    last_reply: torch.Tensor
    """[N] the user's last reply act (`REPLIES`)."""
    last_intent: torch.Tensor
    """[N] the bot's last intent, len(INTENTS) + 1 before the first bot turn."""
    turn: torch.Tensor
    """[N] bot turns so far."""
    bot_tokens: torch.Tensor
    """[N, MAX_LEN] the bot's last utterance (padding before the first)."""
    user_tokens: torch.Tensor
    """[N, MAX_LEN] the user's last utterance."""

    @classmethod
    def start(cls, opening_topic: torch.Tensor, user_tokens: torch.Tensor, num_topics: int) -> Conversation:
        """Conversations that the users opened (on ``opening_topic``, saying ``user_tokens``)."""
        n, device = opening_topic.shape[0], opening_topic.device
        return cls(topic=opening_topic.clone(), stated=torch.full((n, num_topics), -1, dtype=torch.long,
                                                                 device=device),
                   recommended=torch.zeros(n, num_topics, device=device),
                   said_recommendations=torch.zeros(n, num_topics, dtype=torch.long, device=device),
                   last_reply=torch.full((n,), L.HELLO, dtype=torch.long, device=device),
                   last_intent=torch.full((n,), len(L.INTENTS) + 1, dtype=torch.long, device=device),
                   turn=torch.zeros(n, dtype=torch.long, device=device),
                   bot_tokens=torch.zeros(n, L.MAX_LEN, dtype=torch.long, device=device), user_tokens=user_tokens)

    @property
    def num_topics(self) -> int:
        return int(self.stated.shape[1])

    def clone(self) -> Conversation:
        return Conversation(*(getattr(self, f.name).clone() for f in fields(self)))

    def where(self, rows: torch.Tensor, other: Conversation) -> Conversation:
        """``other`` on ``rows``, ``self`` elsewhere."""
        def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.where(rows.reshape(-1, *([1] * (a.dim() - 1))), b, a)

        return Conversation(*(pick(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)))

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name).clone() for f in fields(self)}

    @classmethod
    def from_dict(cls, state: dict[str, torch.Tensor], device: torch.device) -> Conversation:
        return cls(**{f.name: state[f.name].to(device).clone() for f in fields(cls)})

    def update(self, bot_tokens: torch.Tensor, user_tokens: torch.Tensor) -> Conversation:
        """The conversations after the bot said ``bot_tokens`` and the user answered ``user_tokens`` (both
        ``[N, MAX_LEN]``): read off the words, as a person following the conversation would."""
        intent, topic, _ = L.parse_bot(bot_tokens)
        n, t = self.stated.shape
        rows = torch.arange(n, device=intent.device)
        new = self.clone()
        topical = (intent == L.RECOMMEND) | (intent == L.CHANGE_TOPIC) | (intent == L.STAY)
        new.topic = torch.where(topical & (topic >= 0) & (topic < t), topic, self.topic)
        onehot = torch.nn.functional.one_hot(new.topic, t)
        is_rec = (intent == L.RECOMMEND)[:, None]
        new.recommended = torch.where(is_rec, self.recommended + onehot, self.recommended)
        new.recommended = torch.where((intent == L.STAY)[:, None], (new.recommended - onehot).clamp(min=0),
                                      new.recommended)
        new.said_recommendations = torch.where(is_rec, self.said_recommendations + onehot, self.said_recommendations)
        reply, reply_topic, level = parse_user(user_tokens)
        said = (level >= 0) & (reply_topic >= 0) & (reply_topic < t)
        new.stated = self.stated.clone()
        new.stated[rows[said], reply_topic[said]] = level[said]
        new.last_reply, new.last_intent = reply, intent
        new.turn = self.turn + 1
        new.bot_tokens, new.user_tokens = bot_tokens.clone(), user_tokens.clone()
        return new

    def features(self, episode_length: int) -> torch.Tensor:
        """The tracker's history embedding ``[N, feature_dim(T)]``: topic one-hot, stated level one-hot per topic
        (unknown, none, some, love), recommendations per topic / 4, last reply and last intent one-hot, turn
        fraction."""
        n, t = self.stated.shape
        one_hot = torch.nn.functional.one_hot
        return torch.cat([one_hot(self.topic, t).float(), one_hot(self.stated + 1, 4).float().reshape(n, 4 * t),
                          self.recommended / 4.0, one_hot(self.last_reply, len(L.REPLIES)).float(),
                          one_hot(self.last_intent, len(L.INTENTS) + 2).float(),
                          (self.turn.float() / episode_length)[:, None]], dim=1)


def feature_dim(num_topics: int) -> int:
    """Width of :meth:`Conversation.features`."""
    return 6 * num_topics + len(L.REPLIES) + len(L.INTENTS) + 2 + 1


_LEVEL_WORDS = (("not", "into", 0), ("care", None, 0), ("rather", None, 0), ("love", None, 2), ("day", None, 2),
                ("guess", None, 1), ("fine", None, 1))
_REPLY_WORDS = (("hi", L.HELLO), ("already", L.ANNOYED), ("told", L.REJECT_TOPIC), ("rather", L.AGREE_TOPIC),
                ("sure", L.AGREE_TOPIC), ("sounds", L.ACCEPT), ("hmm", L.DECLINE), ("appreciate", L.THANKS),
                ("why", L.SHRUG), ("mean", L.CONFUSED), ("bye", L.BYE), ("day", L.CHAT), ("fine", L.CHAT),
                ("care", L.CHAT), ("love", L.STATE), ("guess", L.STATE), ("into", L.STATE))


def parse_user(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(reply act, topic, stated level)`` of user utterances ``[..., MAX_LEN]`` read off their words
    (level -1 where the utterance states none; topic -1 where it names none)."""
    def has(word: str) -> torch.Tensor:
        return (tokens == L.WORD_ID[word]).any(-1)

    n_topics = len(L.TOPICS)
    is_topic = (tokens >= L.TOPIC_TOKEN0) & (tokens < L.TOPIC_TOKEN0 + n_topics)
    first = torch.arange(tokens.shape[-1], 0, -1, device=tokens.device)
    topic_word = tokens.gather(-1, (is_topic * first).argmax(-1, keepdim=True)).squeeze(-1)
    topic = torch.where(is_topic.any(-1), topic_word - L.TOPIC_TOKEN0, -1)
    reply = torch.full(tokens.shape[:-1], L.CONFUSED, dtype=torch.long, device=tokens.device)
    found = torch.zeros_like(reply, dtype=torch.bool)
    for word, act in _REPLY_WORDS:  # first match wins
        hit = has(word) & ~found
        reply, found = torch.where(hit, act, reply), found | hit
    level = torch.full_like(reply, -1)
    decided = torch.zeros_like(found)
    for word, also, value in _LEVEL_WORDS:
        hit = has(word) & ~decided
        if also is not None:
            hit &= has(also)
        level, decided = torch.where(hit, value, level), decided | hit
    level = torch.where(topic >= 0, level, -1)
    return reply, topic, level


__all__ = ["Conversation", "feature_dim", "parse_user"]
