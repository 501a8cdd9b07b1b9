"""The language layer: one word-level vocabulary, acts rendered as token ids, and bot utterances parsed back to acts.

Everything said in a dialogue is a sequence of word ids over :data:`VOCAB` (``[..., MAX_LEN]`` int64, padded
with 0), so that experts, the simulator and the encoders exchange tensors and never Python strings; text is
only made for people (:func:`detokenize`).

**Bot acts** (what an expert means) are ``(intent, topic, item)`` with intents :data:`INTENTS`:

==================  ==========================================================  ==================
intent              template                                                    topic, item
==================  ==========================================================  ==================
``ask``             "what do you enjoy talking about ?"                         -, -
``recommend``       "you might like <item> , a great <topic> pick"              the item's, item
``empathise``       "i am sorry , that sounds frustrating"                      -, -
``change_topic``    "shall we talk about <topic> instead ?"                     new topic, -
``stay_on_topic``   "tell me more about what you like in <topic>"               current topic, -
==================  ==========================================================  ==================

:func:`parse_bot` reads an utterance back to its act by its key words (the simulator's understanding of what
the bot said, so that utterances from a learned generator are understood exactly as templates are); an
utterance with no recognised intent, or a topical intent without a topic, is :data:`UNPARSED`.

**User acts** are :data:`REPLIES` with a topic, an item and a stated interest level; a level (none, some,
love) is only ever said about a topic by a reply that states it, which is what the consistency tests read.
"""

from __future__ import annotations

import torch

TOPICS = ("movies", "music", "sports", "cooking", "travel", "books")
ITEMS = (("inception", "casablanca", "amelie", "heat"),
         ("jazz", "reggae", "opera", "techno"),
         ("tennis", "rugby", "cycling", "chess"),
         ("paella", "ramen", "risotto", "curry"),
         ("lisbon", "kyoto", "iceland", "patagonia"),
         ("dune", "emma", "ulysses", "beloved"))
"""Four items per topic, each a single word (``ITEMS[topic][item]``)."""
ITEMS_PER_TOPIC = 4
INTENTS = ("ask", "recommend", "empathise", "change_topic", "stay_on_topic")
ASK, RECOMMEND, EMPATHISE, CHANGE_TOPIC, STAY = range(5)
UNPARSED = len(INTENTS)
"""The intent id of an utterance the simulator cannot read."""
REPLIES = ("hello", "state_preference", "accept", "decline", "reject_topic", "agree_topic", "chat", "thanks",
           "shrug", "annoyed", "confused", "bye")
(HELLO, STATE, ACCEPT, DECLINE, REJECT_TOPIC, AGREE_TOPIC, CHAT, THANKS, SHRUG, ANNOYED, CONFUSED,
 BYE) = range(len(REPLIES))
LEVELS = ("none", "some", "love")
"""Stated interest levels: none (interest 0), some (0 < interest < love_threshold), love."""
MAX_LEN = 12
"""Tokens per utterance, padding included."""

_BOT = {
    ASK: "what do you enjoy talking about ?",
    RECOMMEND: "you might like <item> , a great <topic> pick",
    EMPATHISE: "i am sorry , that sounds frustrating",
    CHANGE_TOPIC: "shall we talk about <topic> instead ?",
    STAY: "tell me more about what you like in <topic>",
}
# User replies: (reply act, stated level or None) -> template.
_USER = {
    (HELLO, None): "hi ! i want to chat about <topic>",
    (STATE, 2): "i love <topic>",
    (STATE, 1): "<topic> is ok i guess",
    (STATE, 0): "i am not into <topic>",
    (ACCEPT, None): "thanks , <item> sounds great",
    (DECLINE, None): "hmm , not for me",
    (REJECT_TOPIC, 0): "i told you i do not care about <topic>",
    (AGREE_TOPIC, None): "sure , <topic> works",
    (AGREE_TOPIC, 0): "i would rather not talk about <topic>",
    (CHAT, 2): "oh i could talk about <topic> all day",
    (CHAT, 1): "<topic> is fine",
    (CHAT, 0): "i do not care about <topic>",
    (THANKS, None): "thanks , i appreciate that",
    (SHRUG, None): "ok ... why ?",
    (ANNOYED, None): "i already told you everything",
    (CONFUSED, None): "what do you mean ?",
    (BYE, None): "i have to go , bye",
}

_words: list[str] = ["<pad>", "<bos>", "<eos>", *TOPICS, *(item for row in ITEMS for item in row)]
for _template in (*_BOT.values(), *_USER.values()):
    for _w in _template.split():
        if not _w.startswith("<") and _w not in _words:
            _words.append(_w)
VOCAB: tuple[str, ...] = tuple(_words)
"""The word list; a word's id is its index. 0 is padding, 1 begin, 2 end of utterance."""
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
PAD, BOS, EOS = 0, 1, 2
TOPIC_TOKEN0 = 3
"""``TOPIC_TOKEN0 + t`` is topic ``t``'s word; items follow, ``ITEM_TOKEN0 + t * ITEMS_PER_TOPIC + i``."""
ITEM_TOKEN0 = TOPIC_TOKEN0 + len(TOPICS)


def _template_ids(template: str) -> tuple[list[int], int, int]:
    """Word ids of a template with -1 / -2 placeholders for topic / item, and the placeholders' positions."""
    ids, topic_at, item_at = [], -1, -1
    for position, word in enumerate(template.split()):
        if word == "<topic>":
            ids.append(-1)
            topic_at = position
        elif word == "<item>":
            ids.append(-2)
            item_at = position
        else:
            ids.append(WORD_ID[word])
    return ids, topic_at, item_at


def _table(templates: dict) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    keys = list(templates)
    rows, topic_pos, item_pos = [], [], []
    for key in keys:
        ids, t, i = _template_ids(templates[key])
        ids = [*ids, EOS]
        rows.append(ids + [PAD] * (MAX_LEN - len(ids)))
        topic_pos.append(t)
        item_pos.append(i)
    return ({k: j for j, k in enumerate(keys)}, torch.tensor(rows), torch.tensor(topic_pos), torch.tensor(item_pos))


_BOT_INDEX, _BOT_ROWS, _BOT_TOPIC, _BOT_ITEM = _table(_BOT)
_USER_INDEX, _USER_ROWS, _USER_TOPIC, _USER_ITEM = _table(_USER)


def _fill(rows: torch.Tensor, topic_pos: torch.Tensor, item_pos: torch.Tensor, topic: torch.Tensor,
          item: torch.Tensor) -> torch.Tensor:
    """Replace the placeholders (-1 topic, -2 item) of template rows by the words of ``topic`` and ``item``."""
    topic_word = TOPIC_TOKEN0 + topic.clamp(min=0)
    item_word = ITEM_TOKEN0 + topic.clamp(min=0) * ITEMS_PER_TOPIC + item.clamp(min=0)
    rows = torch.where(rows == -1, topic_word.unsqueeze(-1), rows)
    return torch.where(rows == -2, item_word.unsqueeze(-1), rows)


def render_bot(intent: torch.Tensor, topic: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
    """Token ids ``[..., MAX_LEN]`` of bot acts (any batch shape; topic and item ignored where unused)."""
    device = intent.device
    index = torch.tensor([_BOT_INDEX[i] for i in range(len(INTENTS))], device=device)[intent.clamp(max=4)]
    rows = _BOT_ROWS.to(device)[index]
    return _fill(rows, _BOT_TOPIC.to(device)[index], _BOT_ITEM.to(device)[index], topic, item)


_USER_KEYS = torch.full((len(REPLIES), 4), -1, dtype=torch.long)
for (_act, _level), _j in _USER_INDEX.items():
    _USER_KEYS[_act, 3 if _level is None else _level] = _j


def render_user(reply: torch.Tensor, topic: torch.Tensor, item: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Token ids of user replies; ``level`` is the stated level (0 none, 1 some, 2 love) or -1 for none stated."""
    device = reply.device
    keys = _USER_KEYS.to(device)[reply]  # [..., 4]: the template of each level, -1 where there is none
    index = torch.where(level >= 0, keys.gather(-1, level.clamp(min=0).unsqueeze(-1)).squeeze(-1), keys[..., 3])
    index = torch.where(index < 0, keys[..., 3], index)
    if (index < 0).any():
        raise ValueError("render_user: a reply act was given a level it cannot state (a bug in the behaviour model).")
    rows = _USER_ROWS.to(device)[index]
    return _fill(rows, _USER_TOPIC.to(device)[index], _USER_ITEM.to(device)[index], topic, item)


def _keyword(tokens: torch.Tensor, word: str) -> torch.Tensor:
    return (tokens == WORD_ID[word]).any(-1)


def parse_bot(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(intent, topic, item)`` of bot utterances ``[..., MAX_LEN]``; :data:`UNPARSED` intent (topic and item
    -1) where the utterance names no intent, or a topical intent without its topic (or a recommendation without
    an item). Words after the first end token are ignored."""
    tokens = tokens.long()
    ended = (tokens == EOS).long().cumsum(-1) > 0
    tokens = tokens.masked_fill(ended, PAD)
    n_topics = len(TOPICS)
    is_topic = (tokens >= TOPIC_TOKEN0) & (tokens < TOPIC_TOKEN0 + n_topics)
    is_item = (tokens >= ITEM_TOKEN0) & (tokens < ITEM_TOKEN0 + n_topics * ITEMS_PER_TOPIC)
    first = torch.arange(tokens.shape[-1], 0, -1, device=tokens.device)  # earlier positions score higher
    topic = torch.where(is_topic.any(-1), tokens.gather(-1, (is_topic * first).argmax(-1, keepdim=True)).squeeze(-1)
                        - TOPIC_TOKEN0, -1)
    item_word = tokens.gather(-1, (is_item * first).argmax(-1, keepdim=True)).squeeze(-1) - ITEM_TOKEN0
    has_item = is_item.any(-1)
    item_topic = torch.where(has_item, item_word // ITEMS_PER_TOPIC, -1)
    item = torch.where(has_item, item_word % ITEMS_PER_TOPIC, -1)
    intent = torch.full(tokens.shape[:-1], UNPARSED, dtype=torch.long, device=tokens.device)
    # Key words, most specific first (a later assignment never overrides an earlier one).
    rules = ((RECOMMEND, _keyword(tokens, "might") & has_item),
             (CHANGE_TOPIC, _keyword(tokens, "shall") & (topic >= 0)),
             (STAY, _keyword(tokens, "more") & (topic >= 0)),
             (ASK, _keyword(tokens, "enjoy")),
             (EMPATHISE, _keyword(tokens, "sorry")))
    for value, hit in rules:
        intent = torch.where((intent == UNPARSED) & hit, value, intent)
    # A recommendation is about its item's topic.
    topic = torch.where(intent == RECOMMEND, item_topic, topic)
    topical = (intent == RECOMMEND) | (intent == CHANGE_TOPIC) | (intent == STAY)
    topic = torch.where(topical, topic, -1)
    item = torch.where(intent == RECOMMEND, item, -1)
    return intent, topic, item


def detokenize(tokens: torch.Tensor) -> str:
    """The text of one utterance ``[MAX_LEN]`` (up to its end token)."""
    words = []
    for token in tokens.tolist():
        if token in (PAD, BOS):
            continue
        if token == EOS:
            break
        words.append(VOCAB[token])
    return " ".join(words)


def bag_of_words(tokens: torch.Tensor) -> torch.Tensor:
    """Unit-norm word counts ``[..., len(VOCAB)]`` of utterances ``[..., MAX_LEN]`` (padding and markers dropped):
    the default utterance embedding, exact and free."""
    counts = torch.zeros(*tokens.shape[:-1], len(VOCAB), device=tokens.device)
    counts.scatter_add_(-1, tokens.long(), torch.ones_like(tokens, dtype=torch.float32))
    counts[..., :3] = 0.0
    return counts / counts.norm(dim=-1, keepdim=True).clamp_min(1.0)


__all__ = ["ASK", "CHANGE_TOPIC", "EMPATHISE", "INTENTS", "ITEMS", "ITEMS_PER_TOPIC", "LEVELS", "MAX_LEN",
           "RECOMMEND", "REPLIES", "STAY", "TOPICS", "UNPARSED", "VOCAB", "WORD_ID", "bag_of_words", "detokenize",
           "parse_bot", "render_bot", "render_user"]
