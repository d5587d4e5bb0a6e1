"""Qwen-Image nodes: ModelSamplingAuraFlow (the noise shift Qwen-Image's and AuraFlow's graphs set) and the
Qwen-Image-Edit text encoders (TextEncodeQwenImageEdit, TextEncodeQwenImageEditPlus).

Qwen-Image itself loads through the split loaders: UNETLoader (the transformer), CLIPLoader type ``qwen_image``
(Qwen2.5-VL), VAELoader (its Wan-style VAE); prompts go through CLIPTextEncode, latents start from
EmptySD3LatentImage.
"""

from __future__ import annotations

from nodegraph.api import (
    Float,
    Link,
    Node,
    Output,
    String,
    encode_qwen_edit,
    hookimpl,
)

from .flux import ModelSamplingSD3


class ModelSamplingAuraFlow(ModelSamplingSD3):
    """Set a flow model's noise shift with model time = sigma (AuraFlow, Qwen-Image: ComfyUI's multiplier 1)."""

    DISPLAY_NAME = "ModelSamplingAuraFlow"
    CATEGORY = "advanced/model"
    INPUTS = {"model": Link("MODEL"),
              "shift": Float(1.73, min=0.0, max=100.0, step=0.01,
                             tooltip="higher spends more of the steps at high noise (Qwen-Image's graphs use 3.1)")}
    OUTPUTS = (Output("MODEL"),)
    MULTIPLIER = 1.0
    FAMILIES = "Qwen-Image, Flux, SD3"


class TextEncodeQwenImageEdit(Node):
    """Encode an edit instruction with the image it edits (Qwen2.5-VL sees the image; the VAE's latent of it
    becomes the reference the model edits)."""

    DISPLAY_NAME = "TextEncodeQwenImageEdit"
    CATEGORY = "advanced/conditioning"
    INPUTS = {"clip": Link("CLIP"),
              "prompt": String("", multiline=True, dynamic_prompts=True),
              "vae": Link("VAE", optional=True, tooltip="encodes the image as the reference latent"),
              "image": Link("IMAGE", optional=True, tooltip="the image to edit (scaled to about 1024² pixels)")}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, clip, prompt: str, vae=None, image=None):
        return (encode_qwen_edit(ctx, clip, prompt, vae, (image,)),)


class TextEncodeQwenImageEditPlus(Node):
    """Encode an edit instruction with up to three images ("Picture 1:" … in the prompt; Qwen-Image-Edit-2509)."""

    DISPLAY_NAME = "TextEncodeQwenImageEditPlus"
    CATEGORY = "advanced/conditioning"
    INPUTS = {"clip": Link("CLIP"),
              "prompt": String("", multiline=True, dynamic_prompts=True),
              "vae": Link("VAE", optional=True, tooltip="encodes each image as a reference latent"),
              "image1": Link("IMAGE", optional=True),
              "image2": Link("IMAGE", optional=True),
              "image3": Link("IMAGE", optional=True)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, clip, prompt: str, vae=None, image1=None, image2=None, image3=None):
        return (encode_qwen_edit(ctx, clip, prompt, vae, (image1, image2, image3), plus=True),)


@hookimpl
def nodegraph_nodes():
    """The Qwen-Image nodes."""
    return [ModelSamplingAuraFlow, TextEncodeQwenImageEdit, TextEncodeQwenImageEditPlus]
