"""HiDream nodes: QuadrupleCLIPLoader (CLIP-L, CLIP-G, T5-XXL and Llama-3.1 as one CLIP) and CLIPTextEncodeHiDream
(a prompt for each of the four encoders).

HiDream-I1 itself loads through the split loaders: UNETLoader (the transformer), VAELoader (Flux.1's ae), and
CLIPLoader/DualCLIPLoader type ``hidream`` for a subset of the text encoders; prompts go through CLIPTextEncode,
the noise shift through ModelSamplingSD3 (3.0 full and fast, 6.0 dev), latents start from EmptySD3LatentImage.
"""

from __future__ import annotations

from nodegraph.api import (
    Link,
    ModelCombo,
    Node,
    Output,
    String,
    encode_hidream_text,
    hookimpl,
    load_split_clip,
    text_encoder_names,
)

from .split_loaders import _SplitFileNode

_TEXT = ("text_encoders", "clip")
_NAMES = ("clip_name1", "clip_name2", "clip_name3", "clip_name4")


class QuadrupleCLIPLoader(_SplitFileNode):
    """Load HiDream's four text encoders as one CLIP: long CLIP-L, long CLIP-G, T5-XXL, Llama-3.1-8B-Instruct (in
    any order; Llama's tokenizer/ folder goes beside its file)."""

    DISPLAY_NAME = "QuadrupleCLIPLoader"
    CATEGORY = "advanced/loaders"
    INPUTS = {name: ModelCombo("text_encoders", text_encoder_names) for name in _NAMES}
    FILE_INPUTS = tuple((name, _TEXT) for name in _NAMES)
    OUTPUTS = (Output("CLIP"),)

    def execute(self, ctx, clip_name1: str, clip_name2: str, clip_name3: str, clip_name4: str):
        return (load_split_clip(ctx, [clip_name1, clip_name2, clip_name3, clip_name4], "hidream"),)


class CLIPTextEncodeHiDream(Node):
    """Encode separate prompts for HiDream's CLIP-L, CLIP-G, T5-XXL and Llama-3.1."""

    DISPLAY_NAME = "CLIPTextEncodeHiDream"
    CATEGORY = "advanced/conditioning"
    INPUTS = {"clip": Link("CLIP"),
              "clip_l": String("", multiline=True, dynamic_prompts=True),
              "clip_g": String("", multiline=True, dynamic_prompts=True),
              "t5xxl": String("", multiline=True, dynamic_prompts=True),
              "llama": String("", multiline=True, dynamic_prompts=True)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, clip, clip_l: str, clip_g: str, t5xxl: str, llama: str):
        return (encode_hidream_text(ctx, clip, clip_l, clip_g, t5xxl, llama),)


@hookimpl
def nodegraph_nodes():
    """The HiDream nodes."""
    return [QuadrupleCLIPLoader, CLIPTextEncodeHiDream]
