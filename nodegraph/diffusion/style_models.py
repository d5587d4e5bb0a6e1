"""Style models: image tokens from a CLIP vision output, appended to a conditioning's text embeddings.

Supported:

- the T2I-Adapter style adapter (TencentARC ``t2iadapter_style_sd14v1``: a small transformer over the CLIP ViT-L/14
  hidden states that emits 8 tokens of the SD1 text width). Its tensor names are the original ones
  (``style_embedding``, ``transformer_layes.N.attn.in_proj_weight``, ``ln_pre``, ``ln_post``, ``proj``); width, token
  count, depth and output width come from the shapes, heads are 16 (the released model's, as ComfyUI assumes);
- Flux Redux (``flux1-redux-dev``: ``redux_up``/``redux_down``), diffusers' ``ReduxImageEncoder``: one T5-width token
  per SigLIP patch (729 for the 384 px SigLIP), from the SigLIP's last hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .detect import UnknownModelError

HEADS = 16


def _style_adapter_class() -> Any:
    import torch
    from torch import nn

    class Block(nn.Module):
        """Pre-norm self-attention + MLP (QuickGELU), CLIP's residual block."""

        def __init__(self, width: int, heads: int) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
            self.ln_1 = nn.LayerNorm(width)
            self.mlp = nn.Sequential()
            self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
            self.mlp.add_module("gelu", _QuickGELU())
            self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
            self.ln_2 = nn.LayerNorm(width)

        def forward(self, x: Any) -> Any:
            h = self.ln_1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    class _QuickGELU(nn.Module):
        def forward(self, x: Any) -> Any:
            return x * torch.sigmoid(1.702 * x)

    class StyleAdapter(nn.Module):
        """Learnt style tokens attend over the image's hidden states; the last ``tokens`` outputs, projected."""

        def __init__(self, width: int, context_dim: int, heads: int, layers: int, tokens: int) -> None:
            super().__init__()
            self.tokens = tokens
            self.style_embedding = nn.Parameter(torch.zeros(1, tokens, width))
            self.transformer_layes = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
            self.ln_pre = nn.LayerNorm(width)
            self.ln_post = nn.LayerNorm(width)
            self.proj = nn.Parameter(torch.zeros(width, context_dim))

        def forward(self, hidden: Any) -> Any:
            style = self.style_embedding.expand(hidden.shape[0], -1, -1)
            x = self.ln_pre(torch.cat([hidden, style.to(hidden.dtype)], dim=1))
            x = self.transformer_layes(x)
            return self.ln_post(x[:, -self.tokens:, :]) @ self.proj

    return StyleAdapter


@dataclass(frozen=True, eq=False)
class StyleModel:
    """STYLE_MODEL: a module turning a CLIP_VISION_OUTPUT into conditioning tokens [B, tokens, width]."""

    model: Any
    kind: str  # "t2i_style" | "redux"
    source: str = ""

    @property
    def nbytes(self) -> int:
        """Approximate memory held."""
        return sum(int(t.element_size() * t.numel()) for t in self.model.parameters())

    def get_cond(self, output: Any) -> Any:
        """The style tokens for a CLIP_VISION_OUTPUT (float32, CPU): [images, tokens, width]."""
        import torch

        hidden = output.last_hidden_state
        param = next(self.model.parameters())
        with torch.no_grad():
            out = self.model(hidden.to(param.device, param.dtype))
        return (out.image_embeds if self.kind == "redux" else out).float().cpu()


def build_style_adapter(state: dict[str, Any], name: str = "file") -> StyleModel:
    """A T2I style adapter from its state dict (original names)."""
    tokens, width = int(state["style_embedding"].shape[1]), int(state["style_embedding"].shape[2])
    layers = len({k.split(".")[1] for k in state if k.startswith("transformer_layes.")})
    context = int(state["proj"].shape[1])
    model = _style_adapter_class()(width, context, HEADS if width % HEADS == 0 else 1, layers, tokens)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UnknownModelError(f"{name}: the style adapter's tensors do not fit (missing {missing[:3]}, unexpected "
                                f"{unexpected[:3]}); it is not a T2I-Adapter style model")
    return StyleModel(model=model.eval(), kind="t2i_style", source=name)


def build_redux(state: dict[str, Any], name: str = "file") -> StyleModel:
    """A Flux Redux image encoder (diffusers' ``ReduxImageEncoder``) from its state dict."""
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder

    up, down = state["redux_up.weight"], state["redux_down.weight"]
    model = ReduxImageEncoder(redux_dim=int(up.shape[1]), txt_in_features=int(down.shape[0]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UnknownModelError(f"{name}: the Redux tensors do not fit diffusers' ReduxImageEncoder ({exc})") \
            from None
    return StyleModel(model=model.eval(), kind="redux", source=name)


def load_style_model(path: Path, allow_pickle: bool = False, name: str | None = None) -> StyleModel:
    """Load a style model file (models/style_models)."""
    from .loading import load_state_dict

    path = Path(path)
    name = name or path.name
    state = load_state_dict(path, allow_pickle)
    if "style_embedding" in state:
        return build_style_adapter(state, name)
    if "redux_up.weight" in state and "redux_down.weight" in state:
        return build_redux(state, name)
    raise UnknownModelError(f"{name} is not a style model this engine knows (no style_embedding or redux_up "
                            "tensor); put t2iadapter_style_sd14v1 or flux1-redux-dev .safetensors in "
                            "models/style_models")


def apply_style(conditioning: list, tokens: Any, strength: float, strength_type: str) -> list:
    """ComfyUI's StyleModelApply: every entry gets the tokens (all images' tokens in one row) appended.

    ``multiply`` scales the tokens by ``strength``; ``attn_bias`` records ComfyUI's ``attention_mask`` (log strength
    on the tokens' columns), which, as in ComfyUI, only attention-mask-aware models (Flux) read.
    """
    import torch

    cond = tokens.flatten(start_dim=0, end_dim=1).unsqueeze(0)
    if strength_type == "multiply":
        cond = cond * strength
    n = cond.shape[1]
    out = []
    for txt, extras in conditioning:
        keys = dict(extras)
        if "attention_mask" in keys or (strength_type == "attn_bias" and strength != 1.0):
            bias = torch.log(torch.tensor([strength if strength_type == "attn_bias" else 1.0]))
            ref = keys.get("attention_mask_img_shape", (1, 1))
            n_ref, n_txt = ref[0] * ref[1], txt.shape[1]
            mask = keys.get("attention_mask")
            if mask is None:
                mask = torch.zeros((txt.shape[0], n_txt + n_ref, n_txt + n_ref), dtype=torch.float16)
            if mask.dtype == torch.bool:
                mask = torch.log(mask.to(dtype=torch.float16))
            grown = torch.zeros((txt.shape[0], n_txt + n + n_ref, n_txt + n + n_ref), dtype=torch.float16)
            grown[:, :n_txt, :n_txt] = mask[:, :n_txt, :n_txt]
            grown[:, :n_txt, n_txt + n:] = mask[:, :n_txt, n_txt:]
            grown[:, n_txt + n:, :n_txt] = mask[:, n_txt:, :n_txt]
            grown[:, n_txt + n:, n_txt + n:] = mask[:, n_txt:, n_txt:]
            grown[:, :n_txt, n_txt:n_txt + n] = bias
            grown[:, n_txt + n:, n_txt:n_txt + n] = bias
            keys["attention_mask"] = grown
            keys["attention_mask_img_shape"] = ref
        if cond.shape[-1] != txt.shape[-1]:
            raise ValueError(f"the style model makes {cond.shape[-1]}-wide tokens but the conditioning is "
                             f"{txt.shape[-1]} wide; use a style model made for this model family (the T2I style "
                             "adapter is for SD1.x, Redux for Flux)")
        out.append((torch.cat((txt, cond.to(txt.dtype)), dim=1), keys))
    return out


__all__ = ["StyleModel", "apply_style", "build_redux", "build_style_adapter", "load_style_model"]
