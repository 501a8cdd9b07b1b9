"""Which part of a denoiser fine-tuning trains: all of it, LoRA adapters (``peft``), or DiffCon's side network.

* ``"full"``: every parameter of a copy of the model;
* ``"lora"``: rank-``r`` LoRA adapters (``peft``, DPOK's rank 4 by default) on the model's linear and
  convolution layers (on a ``diffusers`` UNet: the attention projections ``to_q``, ``to_k``, ``to_v``,
  ``to_out.0``); the adapters start at zero, so the fine-tuned model starts equal to the pretrained one;
* ``"side"``: :class:`SideNetwork`, DiffCon's gray-box control: the frozen pretrained prediction plus a small
  control network that reads the noisy sample, the timestep and the pretrained model's intermediate output
  (the input of its last layer, captured by a forward hook). The backbone's parameters never change and take
  no gradient; the control's last layer starts at zero.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlcore.adapters.diffusion.sampling import predict_noise
from rlcore.networks.embeddings import timestep_embedding

TRAINABLE = ("full", "lora", "side")
"""Accepted values of ``FinetuneConfig.trainable``."""

UNET_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _last_layer(model: nn.Module) -> nn.Module:
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        raise ValueError(f"the side network reads the input of the denoiser's last Linear or Conv2d layer; "
                         f"{type(model).__name__} has none.")
    return layers[-1]


class SideNetwork(nn.Module):
    """``ε(x_t, t, c) = ε_ref(x_t, t, c) + g_φ(x_t, t, h_ref)`` with ``h_ref`` the frozen backbone's features.

    Args:
        backbone: the pretrained denoiser (frozen here: no parameter of it is trained or takes a gradient).
        hidden: width of the control network.
    """

    def __init__(self, backbone: nn.Module, hidden: int = 64) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        last = _last_layer(backbone)
        self._features: torch.Tensor | None = None
        last.register_forward_hook(lambda _m, inputs, _out: setattr(self, "_features", inputs[0].detach()))
        self.conv = isinstance(last, nn.Conv2d)
        if self.conv:
            out, feat = last.out_channels, last.in_channels
            self.control = nn.Sequential(nn.Conv2d(out + feat + 1, hidden, 3, padding=1), nn.SiLU(),
                                         nn.Conv2d(hidden, out, 3, padding=1))
        else:
            self._embed = timestep_embedding
            out, feat = last.out_features, last.in_features
            self.control = nn.Sequential(nn.Linear(out + feat + 32, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                         nn.SiLU(), nn.Linear(hidden, out))
        nn.init.zeros_(self.control[-1].weight)
        nn.init.zeros_(self.control[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: Any = None) -> torch.Tensor:
        with torch.no_grad():
            eps = predict_noise(self.backbone, x, t, condition)
        h = self._features
        if self.conv:
            scale = (t.float() / 1000.0).reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
            return eps + self.control(torch.cat([x, h, scale], 1))
        return eps + self.control(torch.cat([x.flatten(1), h, self._embed(t)], 1)).reshape(eps.shape)

    def train(self, mode: bool = True) -> SideNetwork:
        super().train(mode)
        self.backbone.eval()  # the backbone always predicts as pretrained (dropout and norms in eval mode)
        return self


def make_trainable(model: nn.Module, kind: str, lora_rank: int = 4, side_hidden: int = 64) -> nn.Module:
    """The module to fine-tune, built on ``model`` (which it may wrap; pass a copy)."""
    if kind not in TRAINABLE:
        raise ValueError(f"trainable must be one of {', '.join(map(repr, TRAINABLE))}; got {kind!r}.")
    if kind == "full":
        return model.requires_grad_(True)
    if kind == "side":
        return SideNetwork(model, side_hidden)
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError("trainable='lora' needs peft: pip install 'rlcore[diffusion]', or use trainable='full' "
                         "or 'side'.") from None
    if type(model).__name__.startswith("UNet2D"):
        targets = UNET_LORA_TARGETS
    else:
        targets = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=targets,
                                            init_lora_weights=True))


def trainable_parameters(model: nn.Module) -> int:
    """How many parameters take a gradient."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["TRAINABLE", "SideNetwork", "make_trainable", "trainable_parameters"]
