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
    Node,
    Output,
    RenormCFGPatch,
    String,
    hookimpl,
    lumina2_prompt,
    with_patch,
)

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


@hookimpl
def nodegraph_nodes():
    """The Lumina 2 and Z-Image nodes."""
    return [CLIPTextEncodeLumina2, RenormCFG]
