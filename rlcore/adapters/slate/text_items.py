"""A candidate pool from text: item texts embedded by all-MiniLM-L6-v2 and projected to the world's size.

``SlateEnv(items="text")`` builds its pool from texts, as PASTA's agent offers prompt expansions: the user's
``item_texts``, or ``num_items`` prompt expansions composed from the world's seed (a style, a subject, a
setting and a mood, all distinct). Each text is embedded by the real all-MiniLM-L6-v2 encoder
(:class:`~rlcore.adapters.text.MiniLMEncoder`, ``text`` extra, offline) into 384 dimensions; the pool is then
centred and projected on its top ``embedding_dim`` principal directions (so that the world, the choice model
and the networks keep their size) and every row is scaled to unit norm, like the generated pool. Texts that
MiniLM places close together stay close: a user type that likes one watercolour lighthouse likes the others.
"""

from __future__ import annotations

import functools
import itertools

import torch

from rlcore.adapters.text import embed_texts, pca_project

STYLES = ("a watercolour painting", "an oil painting", "a pencil sketch", "a photograph", "a 3d render",
          "a pixel-art scene", "an ink drawing", "a vintage poster")
SUBJECTS = ("a lighthouse", "a red fox", "a city skyline", "a sailing boat", "a mountain village", "an old library",
            "a jazz band", "a robot gardener", "a bowl of fruit", "a desert caravan")
SETTINGS = ("at dusk", "in heavy rain", "under the northern lights", "on a misty morning", "at noon in summer",
            "in deep winter snow", "by candlelight", "on a stormy sea")
MOODS = ("calm", "dramatic", "whimsical", "melancholic", "vibrant")


def prompt_expansions(num_items: int, seed: int) -> tuple[str, ...]:
    """``num_items`` distinct prompt expansions, drawn without replacement from the composed vocabulary."""
    combos = list(itertools.product(STYLES, SUBJECTS, SETTINGS, MOODS))
    if not 1 <= num_items <= len(combos):
        raise ValueError(f"items='text' without item_texts composes at most {len(combos)} prompt expansions, got "
                         f"num_items = {num_items}; pass item_texts (one text per item) for a larger pool.")
    order = torch.randperm(len(combos), generator=torch.Generator().manual_seed(int(seed) + 104_729))
    return tuple(f"{style} of {subject} {setting}, {mood}"
                 for style, subject, setting, mood in (combos[i] for i in order[:num_items].tolist()))


@functools.lru_cache(maxsize=8)
def minilm_embeddings(texts: tuple[str, ...]) -> torch.Tensor:
    """The all-MiniLM-L6-v2 embeddings ``[len(texts), 384]`` of ``texts`` on the CPU (memoised per text set)."""
    return embed_texts(texts, purpose="SlateEnv(items='text')", alternative=", or use items='generated'")


def text_item_embeddings(texts: tuple[str, ...], dim: int) -> torch.Tensor:
    """Unit ``[I, dim]`` item embeddings of ``texts`` (MiniLM, then :func:`~rlcore.adapters.text.pca_project`)."""
    return pca_project(minilm_embeddings(tuple(texts)), dim)


__all__ = ["MOODS", "SETTINGS", "STYLES", "SUBJECTS", "minilm_embeddings", "prompt_expansions",
           "text_item_embeddings"]
