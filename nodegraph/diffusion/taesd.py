"""TAESD, the tiny autoencoders ComfyUI's VAELoader offers as ``taesd``/``taesdxl``/``taesd3``/``taef1``.

Each is two files in ``models/vae_approx`` (``<name>_encoder.safetensors`` and ``<name>_decoder.safetensors``, the
layout of https://github.com/madebyollin/taesd: the tensors of one ``nn.Sequential`` each), loaded into a diffusers
``AutoencoderTiny`` (the decoder's index 0 is its input clamp, which diffusers does in ``forward``: every decoder
layer moves down one). ``TinyVAE`` puts it behind the image-VAE interface (``encode(x).latent_dist.mean``,
``decode(z).sample``) in the LATENT convention of the model family it serves (unscaled latents: TAESD works on
scaled ones, so ``decode`` takes ``(z - shift) * scale``, as ComfyUI's ``comfy.taesd``). Live previews decode with
the TAESD of the sampled model's latent format (``decoder_for``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from .types import LatentFormat, VAEModel

CONFIG = Path(__file__).parent / "configs" / "taesd" / "config.json"
#: ComfyUI's image TAESDs in its order: name → (scaling factor, shift factor) of the family's latents.
TAES: dict[str, tuple[float, float]] = {"taesd": (0.18215, 0.0), "taesdxl": (0.13025, 0.0),
                                        "taesd3": (1.5305, 0.0609), "taef1": (0.3611, 0.1159)}
FOLDER = "vae_approx"
_INDEX = re.compile(r"^(\d+)\.(.*)$")


def _files(config: Any, name: str) -> dict[str, str]:
    from nodegraph.models.folders import list_models

    found: dict[str, str] = {}
    for file in list_models(config, FOLDER) if config else []:
        for part in ("encoder", "decoder"):
            if file.startswith(f"{name}_{part}.") and part not in found:
                found[part] = file
    return found


def taesd_names(config: Any) -> list[str]:
    """The TAESDs whose encoder and decoder files are both in models/vae_approx (ComfyUI's ``VAELoader.vae_list``)."""
    return [name for name in TAES if len(_files(config, name)) == 2]


def taesd_paths(config: Any, name: str) -> dict[str, Path]:
    """``{"encoder": path, "decoder": path}`` of TAESD ``name`` (those present), inside models/vae_approx."""
    from .loading import resolve_model

    return {part: Path(resolve_model(config, FOLDER, file)) for part, file in _files(config, name).items()}


def _runs(state: dict[str, Any]) -> list[tuple[str, int, Any]]:
    """(kind, index, first weight) per Sequential index: ``block`` (an AutoencoderTinyBlock) or ``conv``."""
    layers: dict[int, tuple[str, Any]] = {}
    for key, value in state.items():
        m = _INDEX.match(key)
        if m is None:
            raise ValueError(f"TAESD: unexpected tensor {key!r}; a TAESD file holds the tensors of one nn.Sequential "
                             "(keys such as '1.weight', '3.conv.0.weight')")
        index, rest = int(m.group(1)), m.group(2)
        if rest.startswith("conv.0."):
            layers[index] = ("block", value if rest.endswith("weight") else layers.get(index, ("", None))[1])
        elif rest == "weight" and layers.get(index, ("",))[0] != "block":
            layers[index] = ("conv", value)
    return [(kind, i, w) for i, (kind, w) in sorted(layers.items())]


def _blocks(runs: list[tuple[str, int, Any]]) -> tuple[list[int], list[int]]:
    """Block counts and widths of each stage (a stage: consecutive blocks between convs)."""
    counts: list[int] = []
    widths: list[int] = []
    previous = "conv"
    for kind, _, weight in runs:
        if kind == "block":
            if previous != "block":
                counts.append(0)
                widths.append(int(weight.shape[0]))
            counts[-1] += 1
        previous = kind
    return counts, widths


def tiny_config(encoder: dict[str, Any], decoder: dict[str, Any]) -> dict[str, Any]:
    """The AutoencoderTiny config of a TAESD encoder/decoder pair (channels and blocks read from the tensors)."""
    base = {k: v for k, v in json.loads(CONFIG.read_text(encoding="utf-8")).items() if not k.startswith("_")}
    enc, dec = _runs(encoder), _runs(decoder)
    if not enc or not dec or enc[-1][0] != "conv" or dec[0][0] != "conv":
        raise ValueError("TAESD: the files do not hold a TAESD encoder and decoder (see madebyollin/taesd)")
    enc_counts, enc_widths = _blocks(enc)
    dec_counts, dec_widths = _blocks(dec)
    return dict(base, latent_channels=int(enc[-1][2].shape[0]), num_encoder_blocks=enc_counts,
                encoder_block_out_channels=enc_widths, num_decoder_blocks=dec_counts,
                decoder_block_out_channels=dec_widths)


def diffusers_state(encoder: dict[str, Any], decoder: dict[str, Any]) -> dict[str, Any]:
    """TAESD file tensors → AutoencoderTiny keys (``encoder.layers.i``; ``decoder.layers.i-1``)."""
    out = {f"encoder.layers.{k}": v for k, v in encoder.items()}
    for key, value in decoder.items():
        index, rest = key.split(".", 1)
        out[f"decoder.layers.{int(index) - 1}.{rest}"] = value
    return out


def taesd_state(tiny: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An AutoencoderTiny's tensors in TAESD's file layout: (encoder, decoder) state dicts."""
    enc: dict[str, Any] = {}
    dec: dict[str, Any] = {}
    for key, value in tiny.state_dict().items():
        part, _, index, rest = key.split(".", 3)
        if part == "encoder":
            enc[f"{index}.{rest}"] = value.contiguous()
        else:
            dec[f"{int(index) + 1}.{rest}"] = value.contiguous()
    return enc, dec


def build_tiny(encoder: dict[str, Any] | None, decoder: dict[str, Any]) -> Any:
    """An AutoencoderTiny (eval, float32) holding TAESD tensors; ``encoder=None`` keeps only a decoder's."""
    from diffusers import AutoencoderTiny

    tiny = AutoencoderTiny.from_config(tiny_config(encoder if encoder is not None else _stub(decoder), decoder))
    state = diffusers_state(encoder or {}, decoder)
    missing, unexpected = tiny.load_state_dict(state, strict=False)
    missing = [k for k in missing if encoder is not None or not k.startswith("encoder.")]
    if missing or unexpected:
        raise ValueError(f"TAESD: the files do not fit AutoencoderTiny (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}); use madebyollin/taesd's *_encoder/*_decoder.safetensors")
    return tiny.eval().float()


def _stub(decoder: dict[str, Any]) -> dict[str, Any]:
    """An encoder layout mirroring a decoder's (for a decoder-only model: previews)."""
    dec = _runs(decoder)
    counts, widths = _blocks(dec)
    latent = int(dec[0][2].shape[1])
    w = torch.empty(0)
    out: dict[str, Any] = {"0.weight": w.new_empty(widths[0], 3, 1, 1)}
    index = 1
    for stage, (count, width) in enumerate(zip(reversed(counts), reversed(widths))):
        if stage:
            out[f"{index}.weight"] = w.new_empty(width, width, 1, 1)
            index += 1
        for _ in range(count):
            out[f"{index}.conv.0.weight"] = w.new_empty(width, width, 1, 1)
            index += 1
    out[f"{index}.weight"] = w.new_empty(latent, widths[-1], 1, 1)
    return out


class TinyVAE(torch.nn.Module):
    """An ``AutoencoderTiny`` behind the image-VAE interface, on unscaled latents (``z / scale + shift``)."""

    def __init__(self, inner: Any, scale: float, shift: float) -> None:
        super().__init__()
        self.inner = inner
        self.scale, self.shift = float(scale), float(shift)
        self.config = SimpleNamespace(latent_channels=int(inner.config.latent_channels),
                                      block_out_channels=tuple(inner.config.encoder_block_out_channels),
                                      scaling_factor=self.scale, shift_factor=self.shift, force_upcast=False)

    def encode(self, x: Any, return_dict: bool = True) -> Any:
        """``.latent_dist.mean``: unscaled latents of images ``[B, 3, H, W]`` in -1..1 (TAESD is deterministic)."""
        z = self.inner.encode(x).latents / self.scale + self.shift
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=z, mode=lambda: z, sample=lambda generator=None: z))

    def decode(self, z: Any, return_dict: bool = True) -> Any:
        """``.sample``: images in -1..1 of unscaled latents ``[B, C, h, w]``."""
        img = self.inner.decode((z - self.shift) * self.scale).sample
        return SimpleNamespace(sample=img) if return_dict else (img,)

    def forward(self, x: Any) -> Any:
        """Reconstruction of images [B, 3, H, W]."""
        return self.decode(self.encode(x).latent_dist.mean).sample


def _read(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"TAESD: {path.name} is not a .safetensors file; convert it (safetensors only)")
    return load_file(str(path))


def load_taesd(config: Any, name: str) -> VAEModel:
    """The VAE of TAESD ``name`` (taesd, taesdxl, taesd3, taef1) from its two files in models/vae_approx."""
    if name not in TAES:
        raise ValueError(f"VAELoader: {name!r} is not a TAESD; choose one of {', '.join(TAES)}")
    paths = taesd_paths(config, name)
    if len(paths) != 2:
        raise FileNotFoundError(f"VAELoader: {name} needs {name}_encoder.safetensors and {name}_decoder.safetensors "
                                f"in models/{FOLDER} (from https://github.com/madebyollin/taesd)")
    scale, shift = TAES[name]
    tiny = build_tiny(_read(paths["encoder"]), _read(paths["decoder"]))
    return VAEModel(vae=TinyVAE(tiny, scale, shift), scaling_factor=scale, shift_factor=shift, source=name)


def name_for(fmt: LatentFormat) -> str | None:
    """The TAESD serving a latent format (matched by its scaling and shift factors and channels), or None."""
    for name, (scale, shift) in TAES.items():
        if abs(fmt.scaling_factor - scale) < 1e-6 and abs(fmt.shift_factor - shift) < 1e-6 \
                and fmt.channels == (4 if name in ("taesd", "taesdxl") else 16):
            return name
    return None


def decoder_for(vae_approx: Path, fmt: LatentFormat) -> TinyVAE | None:
    """A decoder-only TinyVAE for ``fmt`` from ``<name>_decoder.safetensors`` in ``vae_approx``, or None."""
    name = name_for(fmt)
    path = Path(vae_approx) / f"{name}_decoder.safetensors"
    if name is None or not path.is_file():
        return None
    scale, shift = TAES[name]
    return TinyVAE(build_tiny(None, _read(path)), scale, shift)
