"""Loading ControlNet and T2I-Adapter files offline: diffusers folders and single ``.safetensors`` files.

Layouts read:
- a diffusers folder (``config.json`` naming ``ControlNetModel`` or ``T2IAdapter`` + weights);
- a single file with diffusers names (``controlnet_cond_embedding.*``, ``adapter.body.*``: ComfyUI's usual copies of
  ``diffusion_pytorch_model.safetensors``);
- a single file in the original layout (``input_hint_block.*``/``zero_convs.*``, optionally under
  ``control_model.``; T2I-Adapter ``conv_in`` + ``body.N.block1``), converted with diffusers' ControlNet converter
  and a T2I key mapping.
The architecture is detected from tensor names and shapes; SD1.5/SD2/SDXL configs ship in
``configs/controlnet/`` and structural fields (widths, depths, hint encoder) are read from the shapes. A ComfyUI
"diff" ControlNet (a ``difference`` key: weights stored as the difference to its base UNet) needs the base model
(``DiffControlNetLoader``). Pickles load only when the user allows them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .detect import CONFIGS_DIR, UnknownModelError

CONTROL_CONFIGS = CONFIGS_DIR / "controlnet"
#: The Canny ControlNet trained for the embedded model (listed first in the controlnet folder).
EMBEDDED_CONTROLNET_NAME = "nodegraph-shapes-canny-v1"
EMBEDDED_CONTROLNET_DIR = Path(__file__).resolve().parent.parent / "embedded" / "controlnet-shapes-canny-v1"
#: Cross-attention width → family of a ControlNet.
_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


@dataclass(frozen=True, eq=False)
class ControlModel:
    """A loaded control model: a diffusers ``ControlNetModel`` or ``T2IAdapter`` and what it was made for."""

    module: Any
    kind: str  # "controlnet" | "t2i_adapter"
    family: str  # "sd1" | "sd2" | "sdxl" | "custom"
    source: str

    @property
    def nbytes(self) -> int:
        """Bytes of its weights (for the model manager's budget)."""
        return sum(int(t.element_size() * t.numel()) for t in (*self.module.parameters(), *self.module.buffers()))


def _config(name: str) -> dict[str, Any]:
    return json.loads((CONTROL_CONFIGS / f"{name}.json").read_text(encoding="utf-8"))


def _strip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _found(state: dict[str, Any]) -> str:
    keys = sorted(state)
    return f"{len(keys)} tensors, e.g. {', '.join(keys[:4]) or '(none)'}"


# ---- ControlNet ------------------------------------------------------------------------------------------------------

def _hint_block_to_diffusers(state: dict[str, Any]) -> dict[str, Any]:
    """``input_hint_block.{0,2,…,2n}`` (conv, SiLU between) → ``controlnet_cond_embedding.conv_in/blocks.i/conv_out``."""
    idx = sorted({int(k.split(".")[1]) for k in state if k.startswith("input_hint_block.")})
    out = {}
    for pos, i in enumerate(idx):
        name = "conv_in" if pos == 0 else "conv_out" if pos == len(idx) - 1 else f"blocks.{pos - 1}"
        for p in ("weight", "bias"):
            if f"input_hint_block.{i}.{p}" in state:
                out[f"controlnet_cond_embedding.{name}.{p}"] = state[f"input_hint_block.{i}.{p}"]
    return out


def _controlnet_from_original(state: dict[str, Any]) -> dict[str, Any]:
    """Diffusers names for an original-layout ControlNet state dict (diffusers' converter + the hint encoder)."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    ops = len({k.split(".")[1] for k in state if k.startswith("input_blocks.") and ".0.op." in k})
    inputs = len({k.split(".")[1] for k in state if k.startswith("input_blocks.")})
    blocks = ops + 1
    per = inputs // blocks
    rest = {k: v for k, v in state.items() if not k.startswith("input_hint_block.")}
    converted = convert_controlnet_checkpoint(rest, {"layers_per_block": per - 1})
    converted = {k: v for k, v in converted.items() if v is not None and not k.startswith("controlnet_cond_embedding")}
    converted.update(_hint_block_to_diffusers(state))
    for old, new in (("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2")):
        for p in ("weight", "bias"):  # SDXL's size/pooled-text embedding (the converter skips it)
            if f"{old}.{p}" in state:
                converted[f"{new}.{p}"] = state[f"{old}.{p}"]
    return converted


def controlnet_config(state: dict[str, Any], base_unet_config: dict[str, Any] | None = None) -> tuple[dict, str]:
    """(diffusers ControlNetModel config, family) read from a diffusers-named state dict's shapes."""
    cross = next((int(v.shape[1]) for k, v in state.items() if k.endswith("attn2.to_k.weight")), None)
    family = _FAMILIES.get(cross or 0, "custom")
    cfg = _config("controlnet_sdxl" if family == "sdxl" else "controlnet_sd15")
    if family == "sd2":
        cfg.update(attention_head_dim=[5, 10, 20, 20], use_linear_projection=True)
    n = len({k.split(".")[1] for k in state if k.startswith("down_blocks.")})
    if n == 0 or "controlnet_cond_embedding.conv_in.weight" not in state:
        raise UnknownModelError(f"not a ControlNet: no down blocks or hint encoder ({_found(state)})")
    cfg["block_out_channels"] = [int(state[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(n)]
    cfg["layers_per_block"] = len({k.split(".")[3] for k in state if k.startswith("down_blocks.0.resnets.")})
    attn = [f"down_blocks.{i}.attentions.0.proj_in.weight" in state for i in range(n)]
    cfg["down_block_types"] = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn]
    depths = [max(1, len({k.split(".")[5] for k in state
                          if k.startswith(f"down_blocks.{i}.attentions.0.transformer_blocks.")})) for i in range(n)]
    same = isinstance(cfg["transformer_layers_per_block"], int) and set(depths) == {cfg["transformer_layers_per_block"]}
    cfg["transformer_layers_per_block"] = cfg["transformer_layers_per_block"] if same else depths
    if cross is not None:
        cfg["cross_attention_dim"] = cross
    proj = next((v for k, v in state.items() if k.endswith("proj_in.weight")), None)
    if proj is not None:
        cfg["use_linear_projection"] = proj.dim() == 2
    conv_in = state["controlnet_cond_embedding.conv_in.weight"]
    nblocks = len({k.split(".")[2] for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
    cfg["conditioning_channels"] = int(conv_in.shape[1])
    cfg["conditioning_embedding_out_channels"] = [int(conv_in.shape[0])] + [
        int(state[f"controlnet_cond_embedding.blocks.{2 * i + 1}.weight"].shape[0]) for i in range(nblocks // 2)]
    cfg["in_channels"] = int(state["conv_in.weight"].shape[1])
    if "add_embedding.linear_1.weight" in state:
        cfg["addition_embed_type"] = "text_time"
        cfg["projection_class_embeddings_input_dim"] = int(state["add_embedding.linear_1.weight"].shape[1])
        cfg["addition_time_embed_dim"] = cfg.get("addition_time_embed_dim") or 256
    else:
        cfg.update(addition_embed_type=None, projection_class_embeddings_input_dim=None, addition_time_embed_dim=None)
    if family in ("sd1", "sdxl") and len(cfg["block_out_channels"]) != len(_config(
            "controlnet_sdxl" if family == "sdxl" else "controlnet_sd15")["block_out_channels"]):
        family = "custom"
    if base_unet_config is not None:  # heads and norms are not visible in shapes: take them from the base UNet
        for key in ("attention_head_dim", "num_attention_heads", "norm_num_groups", "norm_eps"):
            if key in base_unet_config:
                cfg[key] = copy.deepcopy(base_unet_config[key])
    elif family == "custom" and isinstance(cfg.get("attention_head_dim"), list):
        cfg["attention_head_dim"] = 8
    return cfg, family


def _materialise_controlnet(state: dict[str, Any], cfg: dict[str, Any], what: str) -> Any:
    from diffusers import ControlNetModel

    from .single_file import materialise

    return materialise(ControlNetModel.from_config, cfg, state, None, what)


# ---- T2I-Adapter -----------------------------------------------------------------------------------------------------

def _adapter_from_original(state: dict[str, Any], res_blocks: int = 2) -> dict[str, Any]:
    """Diffusers names for TencentARC's layout: ``body.N.{in_conv,block1,block2}`` → ``adapter.body.B.…``."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "conv_in":
            out["adapter." + k] = v
        elif parts[0] == "body" and len(parts) >= 4:
            n = int(parts[1])
            block, res = divmod(n, res_blocks)
            if parts[2] == "in_conv":
                out[f"adapter.body.{block}.in_conv.{'.'.join(parts[3:])}"] = v
            else:
                out[f"adapter.body.{block}.resnets.{res}.{'.'.join(parts[2:])}"] = v
        else:
            raise UnknownModelError(f"unexpected T2I-Adapter tensor {k!r}; only full adapters (not the light or "
                                    "style adapters) are supported")
    return out


def adapter_config(state: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(diffusers T2IAdapter config, family) from a diffusers-named adapter state dict."""
    conv_in = state["adapter.conv_in.weight"]
    n = len({k.split(".")[2] for k in state if k.startswith("adapter.body.")})
    packed = int(conv_in.shape[1])  # in_channels × factor² (pixel unshuffle)
    in_ch = 3 if packed % 3 == 0 and round((packed // 3) ** 0.5) ** 2 == packed // 3 else 1
    factor = round((packed // in_ch) ** 0.5)
    if factor * factor * in_ch != packed:
        raise UnknownModelError(f"T2I-Adapter conv_in takes {packed} channels, which is not 1 or 3 image channels "
                                "unshuffled by a square factor; the file is not a full T2I-Adapter")
    xl = factor == 16 and n == 4
    cfg = _config("t2i_adapter_sdxl" if xl else "t2i_adapter_sd15")
    cfg.update(in_channels=in_ch, downscale_factor=factor)
    cfg["channels"] = [int(state[f"adapter.body.{i}.resnets.0.block2.weight"].shape[0]) for i in range(n)]
    cfg["num_res_blocks"] = len({k.split(".")[4] for k in state if k.startswith("adapter.body.0.resnets.")})
    standard = cfg["channels"] == [320, 640, 1280, 1280]
    return cfg, ("sdxl" if xl else "sd1") if standard else "custom"


def _materialise_adapter(state: dict[str, Any], cfg: dict[str, Any], what: str) -> Any:
    from diffusers import T2IAdapter

    from .single_file import materialise

    return materialise(T2IAdapter.from_config, cfg, state, None, what)


def controlnet_names(config: Any) -> list[str]:
    """The embedded Canny ControlNet (when installed) first, then files and folders under models/controlnet."""
    from nodegraph.models import folders

    embedded = [EMBEDDED_CONTROLNET_NAME] if (EMBEDDED_CONTROLNET_DIR / "config.json").is_file() else []
    return embedded + (folders.list_models(config, "controlnet") if config else [])


# ---- entry points ----------------------------------------------------------------------------------------------------

def from_state_dict(state: dict[str, Any], name: str, base_unet: Any = None) -> ControlModel:
    """A ControlModel from a single file's tensors (any supported layout); ``base_unet`` completes diff files."""
    state = dict(state)
    diff = state.pop("difference", None) is not None
    state = _strip(state, "control_model.")
    from .flow.sd3_controlnet import is_sd3_controlnet, sd3_controlnet_from_state

    if is_sd3_controlnet(state):  # SD3/SD3.5 (MMDiT) ControlNets
        return sd3_controlnet_from_state(state, name)
    if "adapter.conv_in.weight" in state or ("conv_in.weight" in state and "body.0.block1.weight" in state):
        if "adapter.conv_in.weight" not in state:
            state = _adapter_from_original(state)
        cfg, family = adapter_config(state)
        return ControlModel(_materialise_adapter(state, cfg, f"{name}: T2I-Adapter"), "t2i_adapter", family, name)
    if any(k.startswith(("task_embedding", "control_add_embedding", "controlnet_x")) for k in state):
        raise UnknownModelError(f"{name} is a union/multi-condition ControlNet (ControlNet++ / Union), which this "
                                "engine does not load yet; use a single-condition ControlNet")
    if "input_hint_block.0.weight" in state:
        state = _controlnet_from_original(state)
    if "controlnet_cond_embedding.conv_in.weight" not in state:
        raise UnknownModelError(f"{name} is neither a ControlNet nor a T2I-Adapter this engine knows ({_found(state)}); "
                                "expected controlnet_cond_embedding.*, input_hint_block.* or adapter.* tensors")
    base_cfg = dict(base_unet.config) if base_unet is not None else None
    if diff:
        if base_unet is None:
            raise UnknownModelError(f"{name} is a diff ControlNet (weights relative to its base model); load it with "
                                    "DiffControlNetLoader and connect the model it was made from")
        base = base_unet.state_dict()
        state = {k: (v + base[k].to(v.dtype) if k in base and base[k].shape == v.shape else v)
                 for k, v in state.items()}
    cfg, family = controlnet_config(state, base_cfg)
    return ControlModel(_materialise_controlnet(state, cfg, f"{name}: ControlNet"), "controlnet", family, name)


def load_control_model(path: Path, allow_pickle: bool = False, base_unet: Any = None) -> ControlModel:
    """Load a ControlNet/T2I-Adapter file or diffusers folder from ``path`` (CPU, float32)."""
    from .loading import check_loadable, load_state_dict, quiet_libraries

    path = Path(path)
    name = path.name
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise UnknownModelError(f"{name} is a folder without config.json; a diffusers ControlNet or T2I-Adapter "
                                    "folder has config.json and diffusion_pytorch_model.safetensors")
        cls_name = json.loads(cfg_file.read_text(encoding="utf-8")).get("_class_name")
        import diffusers

        classes = {"ControlNetModel": ("controlnet", diffusers.ControlNetModel),
                   "T2IAdapter": ("t2i_adapter", diffusers.T2IAdapter),
                   "SD3ControlNetModel": ("sd3_controlnet", diffusers.SD3ControlNetModel)}
        if cls_name not in classes:
            raise UnknownModelError(f"{name}/config.json names {cls_name!r}; this loader reads ControlNetModel and "
                                    "T2IAdapter folders")
        kind, cls = classes[cls_name]
        has_safe = any(path.glob("*.safetensors"))
        if not has_safe and not allow_pickle:
            check_loadable(next(path.glob("*.bin"), path / "diffusion_pytorch_model.bin"), False)
        with quiet_libraries():
            module = cls.from_pretrained(str(path), use_safetensors=has_safe, local_files_only=True,
                                         torch_dtype=None).float().eval()
        cross = getattr(module.config, "cross_attention_dim", None)
        channels = getattr(module.config, "channels", None)
        family = _FAMILIES.get(int(cross), "custom") if cross else (
            ("sdxl" if module.config.adapter_type == "full_adapter_xl" else "sd1")
            if list(channels or []) == [320, 640, 1280, 1280] else "custom")
        return ControlModel(module, kind, "sd3" if kind == "sd3_controlnet" else family, name)
    check_loadable(path, allow_pickle)
    return from_state_dict(load_state_dict(path, allow_pickle), name, base_unet)


__all__ = ["ControlModel", "CONTROL_CONFIGS", "EMBEDDED_CONTROLNET_DIR", "EMBEDDED_CONTROLNET_NAME", "adapter_config",
           "controlnet_config", "controlnet_names", "from_state_dict", "load_control_model"]
