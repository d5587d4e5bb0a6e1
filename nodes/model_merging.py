"""Model nodes: checkpoint merges, CLIP merges and saving checkpoints (ComfyUI's ``advanced/model_merging``).

Merges record a patch on a copy of ``model1``/``clip1`` (weights shared, inputs unchanged) that is applied while the
result samples or encodes; see ``nodegraph.diffusion.merging``. CheckpointSave writes ComfyUI's file layout.
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import Float, Link, Node, NodeOutput, Output, String, hookimpl, merge_models, save_checkpoint

CATEGORY = "advanced/model_merging"


def _ratio(tooltip: str) -> Float:
    return Float(1.0, min=0.0, max=1.0, step=0.01, tooltip=tooltip)


class ModelMergeSimple(Node):
    """Blend two diffusion models: ratio 1 keeps model1, 0 gives model2."""

    CATEGORY = CATEGORY
    INPUTS = {"model1": Link("MODEL"), "model2": Link("MODEL"),
              "ratio": _ratio("share of model1 in every weight (1 = model1, 0 = model2)")}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx: Any, model1: Any, model2: Any, ratio: float) -> tuple[Any]:
        return (merge_models(model1, model2, ratio, 1.0 - ratio, name="ModelMergeSimple"),)


class ModelMergeBlocks(Node):
    """Blend two diffusion models with one ratio for the input, middle and output blocks of the UNet."""

    CATEGORY = CATEGORY
    INPUTS = {"model1": Link("MODEL"), "model2": Link("MODEL"),
              "input": _ratio("share of model1 in the input (down) blocks and the embeddings"),
              "middle": _ratio("share of model1 in the middle block"),
              "out": _ratio("share of model1 in the output (up) blocks and the final layers")}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx: Any, model1: Any, model2: Any, input: float, middle: float, out: float) -> tuple[Any]:
        blocks = tuple((prefix, r, 1.0 - r) for prefix, r in (("input", input), ("middle", middle), ("out", out)))
        return (merge_models(model1, model2, input, 1.0 - input, blocks, name="ModelMergeBlocks"),)


class ModelMergeSubtract(Node):
    """model1 minus model2, times a multiplier (a "difference" model to add elsewhere)."""

    CATEGORY = CATEGORY
    INPUTS = {"model1": Link("MODEL"), "model2": Link("MODEL"),
              "multiplier": Float(1.0, min=-10.0, max=10.0, step=0.01,
                                  tooltip="the result is multiplier × (model1 − model2)")}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx: Any, model1: Any, model2: Any, multiplier: float) -> tuple[Any]:
        return (merge_models(model1, model2, multiplier, -multiplier, name="ModelMergeSubtract"),)


class ModelMergeAdd(Node):
    """model1 plus model2, weight by weight (add a difference model)."""

    CATEGORY = CATEGORY
    INPUTS = {"model1": Link("MODEL"), "model2": Link("MODEL")}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx: Any, model1: Any, model2: Any) -> tuple[Any]:
        return (merge_models(model1, model2, 1.0, 1.0, name="ModelMergeAdd"),)


class CLIPMergeSimple(Node):
    """Blend two text encoders: ratio 1 keeps clip1, 0 gives clip2."""

    CATEGORY = CATEGORY
    INPUTS = {"clip1": Link("CLIP"), "clip2": Link("CLIP"),
              "ratio": _ratio("share of clip1 in every weight (1 = clip1, 0 = clip2)")}
    OUTPUTS = (Output("CLIP"),)

    def execute(self, ctx: Any, clip1: Any, clip2: Any, ratio: float) -> tuple[Any]:
        return (merge_models(clip1, clip2, ratio, 1.0 - ratio, name="CLIPMergeSimple"),)


class CLIPMergeSubtract(Node):
    """clip1 minus clip2, times a multiplier (a "difference" text encoder to add elsewhere)."""

    CATEGORY = CATEGORY
    INPUTS = {"clip1": Link("CLIP"), "clip2": Link("CLIP"),
              "multiplier": Float(1.0, min=-10.0, max=10.0, step=0.01,
                                  tooltip="the result is multiplier × (clip1 − clip2)")}
    OUTPUTS = (Output("CLIP"),)

    def execute(self, ctx: Any, clip1: Any, clip2: Any, multiplier: float) -> tuple[Any]:
        return (merge_models(clip1, clip2, multiplier, -multiplier, name="CLIPMergeSubtract"),)


class CLIPMergeAdd(Node):
    """clip1 plus clip2, weight by weight (add a difference text encoder)."""

    CATEGORY = CATEGORY
    INPUTS = {"clip1": Link("CLIP"), "clip2": Link("CLIP")}
    OUTPUTS = (Output("CLIP"),)

    def execute(self, ctx: Any, clip1: Any, clip2: Any) -> tuple[Any]:
        return (merge_models(clip1, clip2, 1.0, 1.0, name="CLIPMergeAdd"),)


def _block_inputs(prefixes: list[str]) -> dict[str, Any]:
    """model1, model2 and one ratio per LDM name prefix (ComfyUI's model-specific merge nodes)."""
    ratio = Float(1.0, min=0.0, max=1.0, step=0.01)
    return {"model1": Link("MODEL"), "model2": Link("MODEL"), **{p: ratio for p in prefixes}}


class _BlockMerge(Node):
    """A merge with one ratio per LDM name prefix: the longest matching prefix wins, the first is the default."""

    CATEGORY = "advanced/model_merging/model_specific"
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx: Any, model1: Any, model2: Any, **ratios: float) -> tuple[Any]:
        prefixes = [k for k in self.INPUTS if k not in ("model1", "model2")]
        default = float(ratios[prefixes[0]])
        blocks = tuple((prefix, float(ratios[prefix]), 1.0 - float(ratios[prefix])) for prefix in prefixes)
        return (merge_models(model1, model2, default, 1.0 - default, blocks, name=type(self).__name__),)


_SD1_BLOCKS = (["time_embed.", "label_emb."] + [f"input_blocks.{i}." for i in range(12)]
               + [f"middle_block.{i}." for i in range(3)] + [f"output_blocks.{i}." for i in range(12)] + ["out."])


class ModelMergeSD1(_BlockMerge):
    """Blend two SD1 UNets with a ratio per block (1 keeps model1)."""

    INPUTS = _block_inputs(_SD1_BLOCKS)


class ModelMergeSD2(_BlockMerge):
    """Blend two SD2 UNets with a ratio per block (the same blocks as SD1; 1 keeps model1)."""

    INPUTS = _block_inputs(_SD1_BLOCKS)


class ModelMergeSDXL(_BlockMerge):
    """Blend two SDXL UNets with a ratio per block (1 keeps model1)."""

    INPUTS = _block_inputs(["time_embed.", "label_emb."] + [f"input_blocks.{i}" for i in range(9)]
                           + [f"middle_block.{i}" for i in range(3)] + [f"output_blocks.{i}" for i in range(9)]
                           + ["out."])


class CheckpointSave(Node):
    """Save a model, CLIP and VAE as one checkpoint file (ComfyUI's layout) in the output folder."""

    DISPLAY_NAME = "Save Checkpoint"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    INPUTS = {"model": Link("MODEL"), "clip": Link("CLIP"), "vae": Link("VAE"),
              "filename_prefix": String("checkpoints/ComfyUI",
                                        tooltip="file name prefix in the output folder; may include a subfolder")}
    OUTPUTS = ()

    def execute(self, ctx: Any, model: Any, clip: Any, vae: Any,
                filename_prefix: str = "checkpoints/ComfyUI") -> NodeOutput:
        entry = save_checkpoint(ctx, model, clip, vae, filename_prefix)
        return NodeOutput((), {"checkpoints": [entry]})


@hookimpl
def nodegraph_nodes():
    """The model merging and saving nodes."""
    return [ModelMergeSimple, ModelMergeBlocks, ModelMergeSubtract, ModelMergeAdd, CLIPMergeSimple, CLIPMergeSubtract,
            CLIPMergeAdd, ModelMergeSD1, ModelMergeSD2, ModelMergeSDXL, CheckpointSave]
