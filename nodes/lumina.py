"""Lumina 2 and Z-Image nodes: CLIPTextEncodeLumina2 (the system prompt Lumina 2 was trained with) and RenormCFG
(Lumina 2's truncated, norm-capped cfg).

Both families load through the split loaders: UNETLoader (the NextDiT transformer), CLIPLoader type ``lumina2``
(Qwen3-4B for Z-Image, Gemma-2-2B for Lumina 2: the file decides), VAELoader (Flux's ``ae.safetensors``); prompts
go through CLIPTextEncode, latents start from EmptySD3LatentImage, ModelSamplingAuraFlow sets the shift.
"""

from __future__ import annotations

from nodegraph.api import (
    LUMINA2_SYSTEM_PROMPTS,
    Combo,
    Float,
    Link,
    ModelCombo,
    Node,
    Output,
    RenormCFGPatch,
    String,
    ZImageFunControl,
    control_context,
    hookimpl,
    list_models,
    load_model_patch,
    lumina2_prompt,
    with_patch,
)

from .latent import encode
from .loaders import ModelFileNode

_SYSTEM_TIP = ("Lumina2 provide two types of system prompts:Superior: " + LUMINA2_SYSTEM_PROMPTS["superior"]
               + " Alignment: " + LUMINA2_SYSTEM_PROMPTS["alignment"])


class CLIPTextEncodeLumina2(Node):
    """Encode a user prompt after one of Lumina 2's system prompts ("<system> <Prompt Start> <prompt>")."""

    DISPLAY_NAME = "CLIP Text Encode for Lumina2"
    CATEGORY = "conditioning"
    DESCRIPTION = ("Encodes a system prompt and a user prompt using a CLIP model into an embedding that can be used "
                   "to guide the diffusion model towards generating specific images.")
    INPUTS = {"system_prompt": Combo(tuple(LUMINA2_SYSTEM_PROMPTS), tooltip=_SYSTEM_TIP),
              "user_prompt": String("", multiline=True, dynamic_prompts=True, tooltip="The text to be encoded."),
              "clip": Link("CLIP", tooltip="The CLIP model used for encoding the text.")}
    OUTPUTS = (Output("CONDITIONING", tooltip="A conditioning containing the embedded text used to guide the "
                                              "diffusion model."),)

    def execute(self, ctx, system_prompt: str, user_prompt: str, clip):
        if clip is None:
            raise ValueError("CLIPTextEncodeLumina2: clip input is invalid: None; connect a CLIPLoader type lumina2")
        return (ctx.models.encode_text(clip, lumina2_prompt(system_prompt, user_prompt)),)


class RenormCFG(Node):
    """Lumina 2's cfg: capped at renorm_cfg times the positive's norm below noise level cfg_trunc, positive only
    above it."""

    DISPLAY_NAME = "RenormCFG"
    CATEGORY = "advanced/model"
    INPUTS = {"model": Link("MODEL"),
              "cfg_trunc": Float(100, min=0.0, max=100.0, step=0.01,
                                 tooltip="noise level (sigma) below which cfg applies; above it only the positive"),
              "renorm_cfg": Float(1.0, min=0.0, max=100.0, step=0.01,
                                  tooltip="cap on the guided prediction's norm, times the positive's (0: no cap)")}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, cfg_trunc: float, renorm_cfg: float):
        family = ctx.models.get(model).family
        if family not in ("lumina2", "z_image"):
            raise ValueError(f"RenormCFG applies to Lumina 2 and Z-Image models here; this MODEL is {family}. "
                             "Remove the node, or load such a model with UNETLoader")
        patch = RenormCFGPatch(float(cfg_trunc), float(renorm_cfg))
        return (with_patch(model, patch),)


def _patch_names(config):
    """Model patch files under models/model_patches."""
    return list_models(config, "model_patches")


class ModelPatchLoader(ModelFileNode):
    """Load a model patch from models/model_patches (Z-Image Fun ControlNet; safetensors only)."""

    DISPLAY_NAME = "ModelPatchLoader"
    CATEGORY = "advanced/loaders"
    MODEL_INPUT = ("name", "model_patches")
    INPUTS = {"name": ModelCombo("model_patches", _patch_names)}
    OUTPUTS = (Output("MODEL_PATCH"),)

    def execute(self, ctx, name: str):
        path = ctx.models.resolve("model_patches", name)
        ctx.models.check_loadable(path)
        return (ctx.models.load_file("model_patches", name, lambda: load_model_patch(path, False, name)),)


class ZImageFunControlnet(Node):
    """Steer a Z-Image MODEL with a Z-Image Fun ControlNet patch and a control image (hints into its layers)."""

    DISPLAY_NAME = "ZImageFunControlnet"
    CATEGORY = "advanced/loaders/zimage"
    INPUTS = {"model": Link("MODEL"), "model_patch": Link("MODEL_PATCH"), "vae": Link("VAE"),
              "strength": Float(1.0, min=-10.0, max=10.0, step=0.01),
              "image": Link("IMAGE", optional=True), "inpaint_image": Link("IMAGE", optional=True),
              "mask": Link("MASK", optional=True)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, model_patch, vae, strength: float, image=None, inpaint_image=None, mask=None):
        if ctx.models.get(model).family != "z_image":
            raise ValueError(f"{type(self).__name__}: the model is not Z-Image; load a Z-Image transformer "
                             "with UNETLoader (Qwen-Image DiffSynth patches are not supported yet)")
        net = ctx.models.get(model_patch)
        channels = int(net.config.control_in_dim)
        fmt = ctx.models.get(model).latent
        image = None if image is None else image[..., :3]
        inpaint_image = None if inpaint_image is None else inpaint_image[..., :3]
        if image is None and (inpaint_image is None or channels <= 16):
            raise ValueError(f"{type(self).__name__}: connect a control image to the image input"
                             + ("" if channels <= 16 else " (or an inpaint_image)"))
        if mask is not None:
            mask = 1.0 - mask.float()  # ComfyUI's patch keeps where this is 1
        context = None  # images of two sizes: encoded at the sampled size, as ComfyUI
        if image is None or inpaint_image is None or image.shape == inpaint_image.shape:
            with ctx.models.use(vae) as (v,):
                context = control_context(lambda pixels: encode(ctx, v, pixels), fmt, channels, image,
                                          inpaint_image, mask)
        patch = ZImageFunControl(model_patch, context, float(strength), image=image, vae=vae, fmt=fmt,
                                 inpaint_image=inpaint_image, mask=mask, channels=channels)
        return (with_patch(model, patch),)


class QwenImageDiffsynthControlnet(ZImageFunControlnet):
    """ComfyUI's model-patch ControlNet node: with a Z-Image Fun ControlNet patch it is ZImageFunControlnet (Qwen
    DiffSynth patches are refused by ModelPatchLoader)."""

    DISPLAY_NAME = "QwenImageDiffsynthControlnet"
    CATEGORY = "advanced/loaders/qwen"
    INPUTS = {"model": Link("MODEL"), "model_patch": Link("MODEL_PATCH"), "vae": Link("VAE"),
              "image": Link("IMAGE"), "strength": Float(1.0, min=-10.0, max=10.0, step=0.01),
              "mask": Link("MASK", optional=True)}

    def execute(self, ctx, model, model_patch, vae, image, strength: float, mask=None):
        return super().execute(ctx, model, model_patch, vae, strength, image=image, mask=mask)


@hookimpl
def nodegraph_nodes():
    """The Lumina 2 and Z-Image nodes."""
    return [CLIPTextEncodeLumina2, RenormCFG, ModelPatchLoader, ZImageFunControlnet, QwenImageDiffsynthControlnet]
