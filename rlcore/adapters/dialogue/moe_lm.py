"""A small mixture-of-experts language model, trained by the library on the simulator's own dialogues (MoE-LM).

As in the MoE-LM paper at this machine's scale: (i) a **shared encoder** of the conversation history into a
latent state ``z`` (a GRU over the words of the last exchange, joined with the dialogue-state tracker's
features), (ii) one word-level **decoder head per intent** (a GRU started from a per-head projection of ``z``,
reading ``z`` at every word), each a specialised generator, and (iii) the RL manager, elsewhere, that picks
among the heads' utterances.

**Training data** (:func:`train_moe_lm`): conversations between simulated users and a uniformly random choice
among the template experts; at every turn, every template expert's proposal is the target of its intent's head
given the history so far. Teacher-forced cross-entropy, Adam. The model learns to write each intent's utterance
with the right topic and item for the conversation, from examples only: nothing of the templates is built in.

**Caching.** :func:`load_moe_lm` trains the model of a :class:`MoELMConfig` once and caches its weights under
``$RLCORE_CACHE_DIR`` (default ``~/.cache/rlcore``)/``dialogue/moe_lm-<hash>.pt``, written atomically; the
hash covers every config field, so a changed config trains a new model. No download, about a minute on one
CPU core.

Decoding is greedy (the argmax word at each position), so a head's utterance is a deterministic function of
the history and the environment stays exactly reproducible.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from rlcore.adapters.cache import cache_file, save_atomic
from rlcore.adapters.dialogue import language as L
from rlcore.adapters.dialogue.conversation import Conversation, feature_dim
from rlcore.adapters.dialogue.experts import available

FORMAT = 1


@dataclass(frozen=True)
class MoELMConfig:
    """The MoE-LM's sizes and its training budget (all of it goes into the cache key)."""

    num_topics: int = 6
    """Topics of the dialogues it is trained on."""
    episode_length: int = 20
    """Turn limit of those dialogues (the tracker's turn feature is relative to it)."""
    word_dim: int = 32
    """Word embedding size (shared by the encoder and every head)."""
    hidden_dim: int = 64
    """GRU width of the encoder and of each head."""
    latent_dim: int = 64
    """Size of the shared history encoding z."""
    train_users: int = 256
    """Simulated conversations in parallel while collecting training data."""
    train_turns: int = 40
    """Turns collected per parallel conversation (users are replaced when they leave)."""
    steps: int = 400
    """Gradient steps."""
    batch_size: int = 256
    """Histories per step (each trains every head whose expert proposed something)."""
    learning_rate: float = 3e-3
    """Adam learning rate."""
    seed: int = 0
    """Seed of the training dialogues and of the initial weights."""


class MoELM(nn.Module):
    """The shared history encoder and the per-intent decoder heads (see the module docstring)."""

    def __init__(self, config: MoELMConfig) -> None:
        super().__init__()
        self.config = config
        v, w, h, z = len(L.VOCAB), config.word_dim, config.hidden_dim, config.latent_dim
        self.words = nn.Embedding(v, w, padding_idx=L.PAD)
        self.encoder = nn.GRU(w, h, batch_first=True)
        self.features = nn.Linear(feature_dim(config.num_topics), h)
        self.latent = nn.Linear(2 * h, z)
        self.head_start = nn.ModuleList(nn.Linear(z, h) for _ in L.INTENTS)
        self.head_gru = nn.ModuleList(nn.GRU(w + z, h, batch_first=True) for _ in L.INTENTS)
        self.head_out = nn.ModuleList(nn.Linear(h, v) for _ in L.INTENTS)
        self._memo: tuple[Conversation, torch.Tensor] | None = None

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode_parts(self, features: torch.Tensor, bot_tokens: torch.Tensor, user_tokens: torch.Tensor) -> torch.Tensor:
        """``z [N, latent_dim]`` from the tracker's features and the last exchange's words."""
        words = self.words(torch.cat([bot_tokens, user_tokens], dim=1))
        _, last = self.encoder(words)
        return torch.tanh(self.latent(torch.cat([last[0], torch.relu(self.features(features))], dim=1)))

    def encode(self, conversation: Conversation, episode_length: int | None = None) -> torch.Tensor:
        """``z`` of conversations (memoised for the last conversation object, which every head reads)."""
        if self._memo is not None and self._memo[0] is conversation:
            return self._memo[1]
        features = conversation.features(episode_length or self.config.episode_length)
        z = self.encode_parts(features, conversation.bot_tokens, conversation.user_tokens)
        self._memo = (conversation, z)
        return z

    def logits(self, z: torch.Tensor, head: int, inputs: torch.Tensor) -> torch.Tensor:
        """Next-word logits ``[N, T, V]`` of head ``head`` reading ``inputs [N, T]`` (teacher forcing)."""
        start = torch.tanh(self.head_start[head](z))[None]
        # z is also read at every position, so that a head can copy the topic and item late in the utterance.
        words = torch.cat([self.words(inputs), z[:, None, :].expand(-1, inputs.shape[1], -1)], dim=-1)
        out, _ = self.head_gru[head](words, start)
        return self.head_out[head](out)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, head: int) -> torch.Tensor:
        """Greedy utterances ``[N, MAX_LEN]`` of head ``head`` (padding after the end word)."""
        n = z.shape[0]
        state = torch.tanh(self.head_start[head](z))[None]
        word = torch.full((n, 1), L.BOS, dtype=torch.long, device=z.device)
        out, ended = [], torch.zeros(n, dtype=torch.bool, device=z.device)
        for _ in range(L.MAX_LEN):
            hidden, state = self.head_gru[head](torch.cat([self.words(word), z[:, None, :]], dim=-1), state)
            word = self.head_out[head](hidden[:, -1]).argmax(-1, keepdim=True)
            token = word[:, 0].masked_fill(ended, L.PAD)
            out.append(token)
            ended |= token == L.EOS
        return torch.stack(out, 1)


class MoEHeadExpert:
    """One head of a trained :class:`MoELM` as an :class:`~rlcore.adapters.dialogue.experts.Expert`."""

    def __init__(self, model: MoELM, intent: int) -> None:
        self.model, self.intent, self.name = model, intent, L.INTENTS[intent]

    @torch.no_grad()
    def propose(self, conversation: Conversation) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model.to(conversation.topic.device)
        return model.generate(model.encode(conversation), self.intent), available(self.intent, conversation)

    def __repr__(self) -> str:
        return f"MoEHeadExpert({self.name!r})"


def collect_dialogues(config: MoELMConfig) -> dict[str, torch.Tensor]:
    """Training data: histories (features, last exchange) and every template expert's proposal, with its mask."""
    from rlcore.adapters.dialogue.env import DialogueEnv

    # The tracker history: the default ("learned") reads the MoE-LM, which is what this data trains.
    env = DialogueEnv(config.train_users, seed=config.seed, num_topics=config.num_topics,
                      episode_length=config.episode_length, history_encoder="tracker")
    generator = torch.Generator().manual_seed(config.seed + 1)
    obs, _ = env.reset(seed=config.seed)
    parts: dict[str, list[torch.Tensor]] = {"features": [], "bot": [], "user": [], "targets": [], "mask": []}
    for _ in range(config.train_turns):
        conv = env._conv
        parts["features"].append(conv.features(config.episode_length))
        parts["bot"].append(conv.bot_tokens.clone())
        parts["user"].append(conv.user_tokens.clone())
        parts["targets"].append(env._tokens.clone())
        parts["mask"].append(env._mask.clone())
        actions = torch.multinomial(obs["candidate_mask"].float(), 1, generator=generator).squeeze(1)
        obs, *_ = env.step(actions)
    return {k: torch.cat(v) for k, v in parts.items()}


def train_moe_lm(config: MoELMConfig | None = None) -> MoELM:
    """Train a MoE-LM on fresh simulated dialogues (see the module docstring); on the CPU, one thread is enough."""
    config = config or MoELMConfig()
    data = collect_dialogues(config)
    torch.manual_seed(config.seed)  # nn.Module initialisation reads the global generator
    model = MoELM(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed + 2)
    size = data["features"].shape[0]
    bos = torch.full((1, 1), L.BOS, dtype=torch.long)
    for _ in range(config.steps):
        idx = torch.randint(0, size, (config.batch_size,), generator=generator)
        z = model.encode_parts(data["features"][idx], data["bot"][idx], data["user"][idx])
        loss = torch.zeros(())
        for head in range(len(L.INTENTS)):
            rows = data["mask"][idx, head]
            if not rows.any():
                continue
            target = data["targets"][idx[rows], head]
            inputs = torch.cat([bos.expand(target.shape[0], 1), target[:, :-1]], 1)
            logits = model.logits(z[rows], head, inputs)
            loss = loss + nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.final_loss = float(loss.detach())
    return model.eval().requires_grad_(False)


def cache_path(config: MoELMConfig, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`load_moe_lm` keeps the weights of ``config``'s model."""
    return cache_file("dialogue", "moe_lm", {"format": FORMAT, **asdict(config)}, cache_dir)


_LOADED: dict[Path, MoELM] = {}


def load_moe_lm(config: MoELMConfig | None = None, cache_dir: str | Path | None = None) -> MoELM:
    """The trained MoE-LM of ``config``: from the cache, else trained now and cached (see the module docstring)."""
    config = config or MoELMConfig()
    path = cache_path(config, cache_dir)
    if path in _LOADED:  # one copy per process: envs built over and over (evaluations) share it
        return _LOADED[path]
    model = None
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model = MoELM(config)
            model.load_state_dict(saved)
            model.eval().requires_grad_(False)
        except Exception:  # a damaged cache file is retrained, not fatal
            model = None
    if model is None:
        sys.stderr.write(f"rlcore: training the dialogue MoE-LM once ({config.steps} steps, about a minute on one CPU "
                         f"core); it is cached at {path}\n")
        model = train_moe_lm(config)
        save_atomic(model.state_dict(), path)
    _LOADED[path] = model
    return model


__all__ = ["MoEHeadExpert", "MoELM", "MoELMConfig", "cache_path", "collect_dialogues", "load_moe_lm", "train_moe_lm"]
