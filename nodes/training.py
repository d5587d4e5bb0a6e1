"""Training in the graph: image datasets, LoRA training, saving and applying trained LoRAs, loss plots.

ComfyUI's names and inputs where it has the node (TrainLoraNode, LoraModelLoader, SaveLoRA, LossGraphNode). A
dataset is an IMAGE batch plus a CONDITIONING with one entry per image (or one for all), as TrainLoraNode takes it;
encode the images with VAEEncode. Trained LoRAs use the kohya layout (see ``nodegraph.training.lora_train``), so
the file SaveLoRA writes loads with LoraLoader here, in ComfyUI and with diffusers' ``load_lora_weights``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from nodegraph.api import (CONCEPTS, LOSSES, OPTIMIZERS, Boolean, Combo, Float, HashCache, Int,
                           Interrupted, Link, LoraFactors, LoraPatch, LoraTrainer, Node, NodeOutput, Output, String,
                           TrainData, TrainedLora, TrainSettings, concept_dataset, hookimpl, line_plot, lora_names,
                           loras_applied, model_path, read_training_record, safe_join, save_lora_file)

log = logging.getLogger(__name__)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ALGORITHMS = ("LoRA", "LoHa", "LoKr", "OFT")  # ComfyUI's choices; only LoRA is trained here
#: Min-SNR-γ loss weighting (Hang et al. 2023; diffusers' training scripts suggest γ=5): on the embedded model it
#: took the new word "star" from 34% to 84% adherence for the same 400 steps (bench/train_lora_adherence.py)
MIN_SNR = 5.0


def _graph_lora_path(ctx: Any, lora: TrainedLora) -> Path:
    """The file an in-graph LoRA is applied from (temp/loras/<sha256>.safetensors, written once)."""
    path = ctx.files.path("temp", f"loras/{lora.digest()}.safetensors")
    if not path.is_file():
        save_lora_file(lora, path)
    return path


def with_graph_lora(ctx: Any, model: Any, lora: TrainedLora, strength: float) -> Any:
    """A copy of ``model`` recording ``lora`` (applied while sampling, like LoraLoader's file LoRAs)."""
    if strength == 0:
        return model
    path = _graph_lora_path(ctx, lora)
    return model.with_lora(LoraPatch(f"graph:{path.stem[:12]}", str(path), float(strength)))


# ---- datasets -------------------------------------------------------------------------------------------------------

def _captions(text: str, count: int, what: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) == 1:
        return lines * count
    if len(lines) != count:
        raise ValueError(f"{what}: {len(lines)} caption lines for {count} images; give one line per image or a "
                         "single line for all")
    return lines


def encode_captions(ctx: Any, clip: Any, captions: list[str]) -> list[Any]:
    """CONDITIONING with one entry per caption (each caption encoded once)."""
    seen: dict[str, Any] = {}
    out = []
    for cap in captions:
        if cap not in seen:
            seen[cap] = ctx.models.encode_text(clip, cap)[0]
        out.append(seen[cap])
    return out


class ShapeConceptDataset(Node):
    """Render a dataset teaching a new shape word ("star") to the embedded model, mixed with shapes it knows."""

    DISPLAY_NAME = "Shape Concept Dataset"
    CATEGORY = "training/dataset"
    INPUTS = {"concept": Combo(list(CONCEPTS), default="star", tooltip="the new shape word"),
              "count": Int(32, min=1, max=4096, tooltip="images of the new shape"),
              "prior_images": Int(32, min=0, max=4096, tooltip="images of known shapes, so the LoRA keeps them"),
              "seed": Int(0, min=0, max=0xFFFFFFFFFFFFFFFF),
              "size": Int(64, min=16, max=1024, step=8, tooltip="width and height in pixels")}
    OUTPUTS = (Output("IMAGE", name="images"), Output("STRING", name="captions", tooltip="one caption per line"))

    def execute(self, ctx, concept: str, count: int, prior_images: int, seed: int, size: int):
        import torch

        images, captions, _ = concept_dataset(concept, count, prior_images, seed % (2 ** 63), size)
        return (torch.from_numpy(images.astype("float32") / 255.0), "\n".join(captions))


class ImageDataset(Node):
    """A training dataset from images already in the graph: the images and one caption per line (or one for all)."""

    DISPLAY_NAME = "Image Dataset"
    CATEGORY = "training/dataset"
    INPUTS = {"images": Link("IMAGE"), "clip": Link("CLIP", tooltip="encodes the captions"),
              "captions": String("", multiline=True, tooltip="one caption per image, one per line; or one line "
                                 "for all")}
    OUTPUTS = (Output("IMAGE", name="images"), Output("CONDITIONING", name="positive",
                                                       tooltip="one entry per image, for TrainLoraNode"))

    def execute(self, ctx, images: Any, clip: Any, captions: str):
        caps = _captions(captions, int(images.shape[0]), "ImageDataset captions")
        return (images, encode_captions(ctx, clip, caps))


class LoadImageDataset(Node):
    """Load a folder of images under input/ for training, resized to the model's size, with their captions."""

    DISPLAY_NAME = "Load Image Dataset"
    CATEGORY = "training/dataset"
    INPUTS = {"folder": String("dataset", tooltip="a folder inside the input folder"),
              "clip": Link("CLIP", tooltip="encodes the captions"),
              "caption": String("", tooltip="one caption for every image; empty: read each image's .txt file"),
              "width": Int(512, min=8, max=4096, step=8), "height": Int(512, min=8, max=4096, step=8),
              "resize_method": Combo(["crop", "stretch"], default="crop",
                                     tooltip="crop: keep the aspect ratio and cut the centre; stretch: squash")}
    OUTPUTS = (Output("IMAGE", name="images"), Output("CONDITIONING", name="positive"))

    @classmethod
    def fingerprint(cls, config, **constants):
        try:
            root = safe_join(config.folder_for("input"), str(constants.get("folder", "")))
        except ValueError:  # an escaping name: execute reports it
            return None
        if not root.is_dir():
            return None
        return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.iterdir()) if p.is_file()]

    def execute(self, ctx, folder: str, clip: Any, caption: str, width: int, height: int, resize_method: str):
        import numpy as np
        import torch
        from PIL import Image, ImageOps

        root = ctx.files.path("input", folder)
        if not root.is_dir():
            raise FileNotFoundError(f"LoadImageDataset: no folder {folder!r} in the input folder "
                                    f"({ctx.files.folder('input')}); put the training images there")
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not files:
            raise ValueError(f"LoadImageDataset: {folder!r} holds no images ({', '.join(IMAGE_EXTS)})")
        images, captions = [], []
        for p in files:
            with Image.open(p) as opened:
                rgb = (ImageOps.exif_transpose(opened) or opened).convert("RGB")
                rgb = ImageOps.fit(rgb, (width, height), Image.Resampling.LANCZOS) if resize_method == "crop" \
                    else rgb.resize((width, height), Image.Resampling.LANCZOS)
                images.append(np.asarray(rgb, dtype=np.float32) / 255.0)
            if caption.strip():
                captions.append(caption.strip())
            else:
                side = p.with_suffix(".txt")
                if not side.is_file():
                    raise FileNotFoundError(f"LoadImageDataset: {p.name} has no caption file {side.name}; add one "
                                            "or give a caption for all images")
                captions.append(side.read_text(encoding="utf-8").strip())
        return (torch.from_numpy(np.stack(images)), encode_captions(ctx, clip, captions))


# ---- training -------------------------------------------------------------------------------------------------------

def _base_sha(ctx: Any, model: Any) -> tuple[str, str | None]:
    source = str(getattr(model, "source", "") or "")
    try:
        path = model_path(ctx.config, "checkpoints", source)
        hashes = ctx.services.get(HashCache, lambda: HashCache(ctx.config.user_dir / "hashes.db"))
        return source, hashes.sha256(path)
    except (OSError, ValueError):
        return source, None


def _existing(ctx: Any, name: str) -> tuple[dict[str, Any] | None, int]:
    if name == "[None]":
        return None, 0
    tensors, record = read_training_record(model_path(ctx.config, "loras", name))
    return tensors, int(record.get("steps", 0))


class TrainLoraNode(Node):
    """Train a LoRA on every conv/linear layer of a model's UNet (as ComfyUI does) from latents and their
    conditioning, towards the model's own target (epsilon, v or x0) with min-SNR-5 weighting; interrupting keeps
    what was learnt."""

    DISPLAY_NAME = "Train LoRA"
    CATEGORY = "training"
    INPUTS = {
        "model": Link("MODEL", tooltip="The model to train the LoRA on."),
        "latents": Link("LATENT", tooltip="The latents of the dataset (VAEEncode its images)."),
        "positive": Link("CONDITIONING", tooltip="One conditioning per image, or one for all."),
        "batch_size": Int(1, min=1, max=10000, step=None, tooltip="The batch size to use for training."),
        "grad_accumulation_steps": Int(1, min=1, max=1024, step=None, tooltip="Batches whose gradients make one step."),
        "steps": Int(16, min=1, max=100000, step=None, tooltip="The number of steps to train the LoRA for."),
        "learning_rate": Float(0.0005, min=0.0000001, max=1.0, step=0.0000001,
                               tooltip="The learning rate to use for training."),
        "rank": Int(8, min=1, max=128, step=None, tooltip="The rank of the LoRA layers."),
        "optimizer": Combo(list(OPTIMIZERS), default="AdamW"),
        "loss_function": Combo(list(LOSSES), default="MSE"),
        "seed": Int(0, min=0, max=0xFFFFFFFFFFFFFFFF, step=None,
                    tooltip="LoRA initialisation, batches, timesteps and noise"),
        "training_dtype": Combo(["bf16", "fp32"], default="bf16", tooltip="autocast dtype of the forward pass"),
        "lora_dtype": Combo(["bf16", "fp32"], default="bf16", tooltip="dtype of the LoRA weights produced"),
        "algorithm": Combo(list(ALGORITHMS), default="LoRA", tooltip="LoRA (the other adapters are not "
                           "implemented here)"),
        "gradient_checkpointing": Boolean(True, tooltip="Recompute activations in the backward pass (less memory)"),
        "existing_lora": Combo(lambda config: lora_names(config) + ["[None]"], default="[None]",
                               tooltip="A LoRA in models/loras to continue training (its layout must match)."),
    }
    OUTPUTS = (Output("MODEL", name="model", tooltip="Model with LoRA applied"),
               Output("LORA_MODEL", name="lora", tooltip="LoRA weights"),
               Output("LOSS_MAP", name="loss_map", tooltip="Loss history"),
               Output("INT", name="steps", tooltip="Total training steps"))

    @classmethod
    def validate_inputs(cls, config, **constants):
        algorithm = constants.get("algorithm")
        if algorithm not in (None, "LoRA"):
            return [("algorithm", f"{algorithm} training is not implemented here; choose LoRA")]
        return []

    def execute(self, ctx, model, latents, positive, batch_size, grad_accumulation_steps, steps, learning_rate, rank,
                optimizer, loss_function, seed, training_dtype, lora_dtype, algorithm, gradient_checkpointing,
                existing_lora):
        import torch
        from PIL import Image

        initial, done_before = _existing(ctx, existing_lora)
        settings = TrainSettings(steps=steps, batch_size=batch_size, learning_rate=learning_rate, rank=rank,
                                 optimizer=optimizer, loss=loss_function, seed=seed % (2 ** 63), dtype=training_dtype,
                                 gradient_checkpointing=gradient_checkpointing, targets="all", min_snr_gamma=MIN_SNR,
                                 grad_accumulation=grad_accumulation_steps)
        out_dtype = torch.bfloat16 if lora_dtype == "bf16" else torch.float32
        with ctx.models.use(model) as (base,):
            fmt = base.latent
            samples = latents["samples"].float()
            data = TrainData.from_conditioning((samples - fmt.shift_factor) * fmt.scaling_factor, positive,
                                               fmt.downscale)
            trainer = LoraTrainer(base.unet, base.scheduler_config, data, settings, initial=initial)
            name, base_sha = _base_sha(ctx, base)
            info = {"base_model": name, "base_model_sha256": base_sha, "dataset_sha256": data.sha256(),
                    "images": int(samples.shape[0]), "prediction_type": base.prediction_type,
                    "settings": {k: v for k, v in vars(settings).items()}}
            every = max(1, steps // 20)

            def on_step(step: int, total: int, loss: float) -> None:
                if step % every == 0 or step == total:
                    log.info("TrainLoraNode %s: step %d/%d loss %.5f", ctx.node_id, step, total, loss)
                    plot = line_plot({f"loss {loss:.4f}": trainer.losses}, 256, 160, title=f"step {step}/{total}")
                    ctx.preview(Image.fromarray(plot), step, total, text=f"loss {loss:.4f}")
                else:
                    ctx.progress(step, total, text=f"loss {loss:.4f}")

            library = ctx.models.lora_library() if base.loras else None
            try:
                with ctx.devices.use(base.unet), loras_applied(base, library):
                    factors = trainer.run(on_step, device=ctx.devices.device)
            except Interrupted:
                partial = _trained(trainer.factors(), out_dtype, done_before, info, trainer.losses)
                if partial.steps > done_before:
                    path = _next_path(ctx, "interrupted/trained_lora", partial.steps)
                    save_lora_file(partial, path, _provenance(ctx))
                    log.warning("TrainLoraNode %s interrupted at step %d: what it learnt is in %s", ctx.node_id,
                                trainer.step, path)
                raise
        lora = _trained(factors, out_dtype, done_before, info, trainer.losses)
        return (with_graph_lora(ctx, model, lora, 1.0), lora, {"loss": list(trainer.losses)}, lora.steps)


def _trained(factors: LoraFactors, dtype: Any, done_before: int, info: dict[str, Any],
             losses: list[float]) -> TrainedLora:
    tensors = {k: (v if k.endswith(".alpha") else v.to(dtype)) for k, v in factors.state_dict().items()}
    steps = done_before + factors.steps
    return TrainedLora(tensors, steps, dict(info, steps_this_run=factors.steps,
                                            final_loss=losses[-1] if losses else None))


def _provenance(ctx: Any) -> dict[str, str]:
    meta = {"prompt": json.dumps(ctx.prompt, sort_keys=True)}
    workflow = ctx.extra_pnginfo.get("workflow")
    if workflow is not None:
        meta["workflow"] = json.dumps(workflow)
    manifest = ctx.manifest
    if manifest:
        meta["nodegraph"] = json.dumps(manifest, sort_keys=True)
    return meta


def _next_path(ctx: Any, prefix: str, steps: int | None) -> Path:
    root = Path(ctx.config.model_dir("loras"))
    base = safe_join(root, prefix)
    base.parent.mkdir(parents=True, exist_ok=True)
    tag = f"_{steps}_steps" if steps is not None else ""
    counter = 1
    while True:
        path = base.with_name(f"{base.name}{tag}_{counter:05}_.safetensors")
        if not path.exists():
            return path
        counter += 1


# ---- using and saving trained LoRAs ---------------------------------------------------------------------------------

class LoraModelLoader(Node):
    """Apply a LoRA trained in the graph (LORA_MODEL) to a model, without a file."""

    DISPLAY_NAME = "Load LoRA Model"
    CATEGORY = "loaders"
    INPUTS = {"model": Link("MODEL", tooltip="The diffusion model the LoRA will be applied to."),
              "lora": Link("LORA_MODEL", tooltip="The LoRA model to apply to the diffusion model."),
              "strength_model": Float(1.0, min=-100.0, max=100.0, step=None,
                                      tooltip="How strongly to modify the diffusion model. This value can be "
                                              "negative.")}
    OUTPUTS = (Output("MODEL", name="model", tooltip="The modified diffusion model."),)

    def execute(self, ctx, model, lora: TrainedLora, strength_model: float):
        return (with_graph_lora(ctx, model, lora, strength_model),)


class SaveLoRA(Node):
    """Save a LoRA trained in the graph to models/loras (kohya layout, with its training record and workflow)."""

    DISPLAY_NAME = "Save LoRA Weights"
    CATEGORY = "loaders"
    OUTPUT_NODE = True
    INPUTS = {"lora": Link("LORA_MODEL", tooltip="The LoRA model to save."),
              "prefix": String("loras/ComfyUI_trained_lora",
                               tooltip="File name prefix inside models/loras (a leading 'loras/' names that folder)."),
              "steps": Int(0, min=0, max=10**9, optional=True,
                           tooltip="Optional: the steps the LoRA was trained for, used to name the file.")}
    OUTPUTS = ()

    def execute(self, ctx, lora: TrainedLora, prefix: str, steps: int | None = None):
        prefix = prefix[len("loras/"):] if prefix.startswith("loras/") else prefix
        path = _next_path(ctx, prefix, steps if steps else None)
        save_lora_file(lora, path, _provenance(ctx))
        rel = path.relative_to(Path(ctx.config.model_dir("loras"))).as_posix()
        return NodeOutput((), {"text": [f"saved LoRA {rel}"], "loras": [{"filename": rel, "type": "loras"}]})


class LossGraphNode(Node):
    """Plot the loss curve of a training run (with a moving average) as a preview image, 840×520 like ComfyUI's."""

    DISPLAY_NAME = "Plot Loss Graph"
    CATEGORY = "training"
    OUTPUT_NODE = True
    INPUTS = {"loss": Link("LOSS_MAP", tooltip="Loss map from training node."),
              "filename_prefix": String("loss_graph", tooltip="Prefix for the saved loss graph image.")}
    OUTPUTS = ()
    SIZE = (840, 520)

    def execute(self, ctx, loss: dict, filename_prefix: str):
        import torch

        values = [float(v) for v in loss.get("loss", [])]
        if not values:
            raise ValueError("LossGraphNode: the loss map is empty; connect TrainLoraNode's loss_map")
        smooth = _moving_average(values, max(1, len(values) // 25))
        series = {"loss": values, "moving average": smooth} if len(values) > 25 else {"loss": values}
        pixels = line_plot(series, *self.SIZE, title=f"training loss ({len(values)} steps)", xlabel="step")
        image = torch.from_numpy(pixels.astype("float32") / 255.0)[None]
        return NodeOutput((), {"images": ctx.files.save_images(image, filename_prefix, "temp")})


def _moving_average(values: list[float], k: int) -> list[float]:
    import numpy as np

    sums = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    return list((sums[idx] - sums[np.maximum(idx - k, 0)]) / np.minimum(idx, k))


@hookimpl
def nodegraph_types():
    """The link types of training: a LoRA trained in the graph and a loss history."""
    return {"LORA_MODEL": "a LoRA trained in the graph (TrainLoraNode): apply with LoraModelLoader, save with "
                          "SaveLoRA",
            "LOSS_MAP": "a training loss history {'loss': [float per step]} (LossGraphNode plots it)"}


@hookimpl
def nodegraph_nodes():
    """The training nodes."""
    return [ShapeConceptDataset, ImageDataset, LoadImageDataset, TrainLoraNode, LoraModelLoader, SaveLoRA,
            LossGraphNode]
