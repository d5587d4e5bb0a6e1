"""Detect the architecture of a single-file checkpoint from its tensor names and shapes (header only).

Recognised (LDM/CompVis key layout, as ComfyUI and A1111 use):

- ``sd1``: UNet cross-attention 768 with a CLIP ViT-L text encoder (``cond_stage_model.transformer.*``).
- ``sd2``: cross-attention 1024 with an OpenCLIP ViT-H text encoder (``cond_stage_model.model.*``).
- ``sdxl``: cross-attention 2048, ``conditioner.embedders.0`` (CLIP-L) and ``.1`` (OpenCLIP bigG).
- ``sdxl_refiner``: cross-attention 1280 with only ``conditioner.embedders.0`` (OpenCLIP bigG).
- ``custom``: files written by nodegraph carry their diffusers configs and tokenizer in the header
  (``METADATA_KEY``); other SD-shaped files with unusual sizes get a config derived from their shapes
  (see ``nodegraph.diffusion.derive``), which needs a standard CLIP vocabulary (49,408 tokens).

Header metadata is data, never paths: only the file names in ``STORED_FILES`` are accepted, each under
``MAX_STORED_FILE_BYTES`` (all together under ``MAX_STORED_TOTAL_BYTES``), JSON ones must hold a JSON object, and
anything else refuses the file with ``UnknownModelError``. Loading builds every model from these configs in memory
(``nodegraph.diffusion.single_file``); ``Detected.write`` (for inspection) writes only those fixed names.

Prediction type (weights do not say it): the header's ``modelspec.prediction_type`` when present, else a ``v_pred``
marker tensor, else the file name (``v-pred``, ``vpred``, ``768-v``, ``-v.``), else for SD2 the statistic ComfyUI
uses — SD2 768-v checkpoints have a final attention block whose ``norm1.bias`` spread is above 0.09, 512-base
epsilon ones below it. SD1 and SDXL default to epsilon. Inpainting UNets (9 input channels) are recognised.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Header metadata key under which nodegraph stores a model's diffusers configs and tokenizer files (JSON).
METADATA_KEY = "nodegraph.diffusers"
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
CLIP_VOCAB_DIR = CONFIGS_DIR / "clip"

UNET = "model.diffusion_model."
_V_NAME = re.compile(r"(v[-_]?pred|768[-_]?v\b|[-_]v\.safetensors$)", re.IGNORECASE)
_SD2_V_KEY = UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
_ATTN2_K = re.compile(r"^model\.diffusion_model\..*\.attn2\.to_k\.weight$")
_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "added_tokens.json")
#: The only file names a checkpoint's header may carry (and the only names ``Detected.write`` ever writes).
STORED_FILES: tuple[str, ...] = (
    "model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
    "text_encoder_2/config.json", "scheduler/scheduler_config.json",
    *(f"{tok}/{name}" for tok in ("tokenizer", "tokenizer_2") for name in _TOKENIZER_FILES))
#: Caps on what a header may carry: per file (CLIP's tokenizer.json is about 2 MB) and in all.
MAX_STORED_FILE_BYTES = 4 * 1024 * 1024
MAX_STORED_TOTAL_BYTES = 16 * 1024 * 1024


class UnknownModelError(ValueError):
    """A file is not a checkpoint this engine can load; the message names the file and what was found."""


@dataclass(frozen=True)
class Header:
    """The tensor names, shapes and metadata of a .safetensors file (no tensor data read)."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]

    def has_prefix(self, prefix: str) -> bool:
        """Whether any tensor name starts with ``prefix``."""
        return any(k.startswith(prefix) for k in self.shapes)

    def count(self, pattern: str) -> int:
        """How many distinct integers fill the ``{}`` of ``pattern`` (e.g. layers of a text encoder)."""
        rx = re.compile(re.escape(pattern).replace(r"\{\}", r"(\d+)"))
        return len({m.group(1) for k in self.shapes if (m := rx.match(k))})


@dataclass
class Detected:
    """What a checkpoint is and the diffusers configs that load it (``files``: relative path → text)."""

    arch: str
    prediction_type: str
    files: dict[str, str]
    reasons: list[str] = field(default_factory=list)
    inpaint: bool = False

    def config(self, rel: str) -> dict[str, Any]:
        """One config file as a dict (e.g. ``unet/config.json``)."""
        return json.loads(self.files[rel])

    @property
    def components(self) -> list[str]:
        """Component folders present (unet, vae, text_encoder, …)."""
        return sorted({r.split("/", 1)[0] for r in self.files if "/" in r})

    def write(self, folder: Path) -> Path:
        """Write the config files into ``folder`` (for ``from_single_file(config=folder)``) and return it.

        Only the fixed names of ``STORED_FILES`` are written (the names come from that constant, never from the
        file); any other entry is refused.
        """
        unknown = sorted(set(self.files) - set(STORED_FILES))
        if unknown:
            raise UnknownModelError(f"refusing to write config files {unknown[:5]}: only {', '.join(STORED_FILES)} "
                                    "are allowed")
        for rel in STORED_FILES:
            if rel in self.files:
                target = folder.joinpath(*rel.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(self.files[rel], encoding="utf-8")
        return folder


def read_header(path: Path) -> Header:
    """Names and shapes of every tensor plus the metadata, read with ``safe_open`` (no tensor is loaded)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
            metadata = dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - any failure to parse a hostile file is "not a model file"
        raise UnknownModelError(f"{path.name} is not a readable .safetensors file ({exc}); re-download or re-export "
                                "it") from None
    return Header(path, shapes, metadata)


def stored_files(name: str, raw: str) -> dict[str, str]:
    """The config and tokenizer files a nodegraph export carries under ``METADATA_KEY``, validated as data.

    Raises ``UnknownModelError`` naming the file, the entry and the fix for anything outside ``STORED_FILES``,
    over the size caps, not text, or (for ``.json`` entries) not a JSON object.
    """
    from nodegraph import jsonsafe

    fix = "re-export the model with nodegraph, or remove the header entry (e.g. save the tensors again without it)"
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_STORED_TOTAL_BYTES + 65536:
        raise UnknownModelError(f"{name}: its {METADATA_KEY!r} header entry is over {MAX_STORED_TOTAL_BYTES} bytes; "
                                f"{fix}")
    try:
        data = jsonsafe.loads(raw)
        files = data["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UnknownModelError(f"{name}: the nodegraph configs in its header are damaged ({exc}); {fix}") from None
    if not isinstance(files, dict):
        raise UnknownModelError(f"{name}: {METADATA_KEY}['files'] must map file names to text; {fix}")
    allowed, total, out = set(STORED_FILES), 0, {}
    for rel, text in files.items():
        shown = repr(rel)[:120]
        if rel not in allowed:
            raise UnknownModelError(f"{name}: its header entry {METADATA_KEY}['files'] names {shown}, which is not "
                                    f"a config file this engine accepts (only {', '.join(STORED_FILES)}); {fix}")
        if not isinstance(text, str):
            raise UnknownModelError(f"{name}: header file {shown} is a {type(text).__name__}, not text; {fix}")
        size = len(text.encode("utf-8", "surrogatepass"))
        total += size
        if size > MAX_STORED_FILE_BYTES or total > MAX_STORED_TOTAL_BYTES:
            raise UnknownModelError(f"{name}: header file {shown} is {size} bytes (caps: {MAX_STORED_FILE_BYTES} per "
                                    f"file, {MAX_STORED_TOTAL_BYTES} in all); {fix}")
        if rel.endswith(".json"):
            try:
                parsed = jsonsafe.loads(text)
            except ValueError as exc:
                raise UnknownModelError(f"{name}: header file {shown} is not valid JSON ({exc}); {fix}") from None
            if not isinstance(parsed, dict):
                raise UnknownModelError(f"{name}: header file {shown} must hold a JSON object; {fix}")
        out[rel] = text
    missing = [rel for rel in ("unet/config.json", "vae/config.json", "scheduler/scheduler_config.json")
               if rel not in out]
    if missing:
        raise UnknownModelError(f"{name}: its {METADATA_KEY!r} header has no {' or '.join(missing)}; {fix}")
    return out


def shipped_files(arch: str) -> dict[str, str]:
    """The config files shipped for ``arch`` (``nodegraph/diffusion/configs/<arch>``)."""
    root = CONFIGS_DIR / arch
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(root.rglob("*.json"))}


def _edit(files: dict[str, str], rel: str, **changes: Any) -> None:
    cfg = json.loads(files[rel])
    cfg.update(changes)
    files[rel] = json.dumps(cfg, indent=2)


def _context_dim(header: Header) -> int | None:
    for key, shape in header.shapes.items():
        if _ATTN2_K.match(key) and len(shape) == 2:
            return shape[1]
    return None


def _read_tensor(path: Path, key: str) -> Any:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(key)


def _prediction_type(header: Header, arch: str, reasons: list[str]) -> str:
    spec = header.metadata.get("modelspec.prediction_type", "").lower()
    if spec:
        reasons.append(f"modelspec.prediction_type={spec!r}")
        return "v_prediction" if spec.startswith("v") else "epsilon"
    if "v_pred" in header.shapes:
        reasons.append("a 'v_pred' marker tensor")
        return "v_prediction"
    if _V_NAME.search(header.path.name):
        reasons.append("the file name says v-prediction")
        return "v_prediction"
    if arch == "sd2" and _SD2_V_KEY in header.shapes:
        spread = float(_read_tensor(header.path, _SD2_V_KEY).float().std(unbiased=False))
        reasons.append(f"SD2 final norm1.bias std {spread:.3f} ({'>' if spread > 0.09 else '<='} 0.09)")
        return "v_prediction" if spread > 0.09 else "epsilon"
    return "epsilon"


def _known_arch(header: Header, ctx: int | None) -> str | None:
    if ctx == 2048 and header.has_prefix("conditioner.embedders.1.model.transformer."):
        return "sdxl"
    if ctx == 1280 and header.has_prefix("conditioner.embedders.0.model.transformer."):
        return "sdxl_refiner"
    if ctx == 1024 and header.has_prefix("cond_stage_model.model.transformer."):
        return "sd2"
    if ctx == 768 and header.has_prefix("cond_stage_model.transformer.text_model."):
        return "sd1"
    return None


def _what_is_it(header: Header) -> str:
    keys = list(header.shapes)
    if any(k.startswith(("lora_unet_", "lora_te", "lora_")) or ".lora_" in k or "lora_A" in k for k in keys[:2000]):
        return "a LoRA (put it in models/loras and use LoraLoader)"
    if keys and all(k.startswith(("encoder.", "decoder.", "quant_conv", "post_quant_conv")) for k in keys):
        return "a VAE (put it in models/vae and use VAELoader)"
    if any(k.startswith(("double_blocks.", "joint_blocks.", "model.diffusion_model.double_blocks",
                         "model.diffusion_model.joint_blocks")) for k in keys):
        return "a transformer (Flux/SD3-style) model, which this engine does not support"
    if header.has_prefix("down_blocks.") or header.has_prefix("unet.down_blocks."):
        return "weights in diffusers naming; save the model as a diffusers folder (save_pretrained) instead"
    prefixes = sorted({k.split(".", 1)[0] for k in keys})[:8]
    return f"{len(keys)} tensors with top-level names {prefixes}"


def detect(path: Path, header: Header | None = None) -> Detected:
    """Identify a single-file checkpoint and return the configs that load it; raises ``UnknownModelError``."""
    header = header or read_header(Path(path))
    name = header.path.name
    if METADATA_KEY in header.metadata:
        files = stored_files(name, header.metadata[METADATA_KEY])
        unet = json.loads(files["unet/config.json"])
        sched = json.loads(files.get("scheduler/scheduler_config.json", "{}"))
        return Detected(arch=arch_of(unet, "text_encoder_2/config.json" in files),
                        prediction_type=str(sched.get("prediction_type", "epsilon")), files=files,
                        reasons=["configs stored in the file's header by nodegraph"])
    if UNET + "input_blocks.0.0.weight" not in header.shapes:
        raise UnknownModelError(f"{name} is not a Stable Diffusion checkpoint: found {_what_is_it(header)}")
    ctx = _context_dim(header)
    in_channels = header.shapes[UNET + "input_blocks.0.0.weight"][1]
    arch = _known_arch(header, ctx)
    reasons = [f"cross-attention width {ctx}", f"{in_channels} UNet input channels"]
    if arch is None:
        from .derive import derive_files

        files = derive_files(header)  # raises UnknownModelError when it cannot
        unet = json.loads(files["unet/config.json"])
        reasons.append("configs derived from tensor shapes")
        arch = "custom"
    else:
        files = shipped_files(arch)
        reasons.append(f"text encoder layout of {arch}")
    adm = header.shapes.get(UNET + "label_emb.0.0.weight") if arch == "sd2" else None  # SD2.1-unCLIP's image input
    prediction = "v_prediction" if adm else _prediction_type(header, arch, reasons)
    if adm:  # ComfyUI's SD21UNCLIP: always v-prediction; the image embedding enters as class_labels
        reasons.append(f"unCLIP image-embedding input of width {adm[1]} (v-prediction)")
        _edit(files, "unet/config.json", class_embed_type="projection", projection_class_embeddings_input_dim=adm[1])
    if in_channels != 4:
        _edit(files, "unet/config.json", in_channels=in_channels)
    if arch == "sd2":
        _edit(files, "unet/config.json", sample_size=96 if prediction == "v_prediction" else 64)
    if "scheduler/scheduler_config.json" in files:
        extra = {"rescale_betas_zero_snr": True} if "ztsnr" in header.shapes else {}
        _edit(files, "scheduler/scheduler_config.json", prediction_type=prediction, **extra)
    return Detected(arch=arch, prediction_type=prediction, files=files, reasons=reasons, inpaint=in_channels == 9)


def arch_of(unet_config: dict[str, Any], has_second_encoder: bool) -> str:
    """Name the architecture of a diffusers UNet config: sd1, sd2, sdxl, sdxl_refiner or custom."""
    ctx = unet_config.get("cross_attention_dim")
    if unet_config.get("addition_embed_type") == "text_time":
        return "sdxl" if has_second_encoder or ctx == 2048 else "sdxl_refiner"
    if ctx == 768 and unet_config.get("block_out_channels") in ([320, 640, 1280, 1280], (320, 640, 1280, 1280)):
        return "sd1"
    if ctx == 1024 and unet_config.get("block_out_channels") in ([320, 640, 1280, 1280], (320, 640, 1280, 1280)):
        return "sd2"
    return "custom"
