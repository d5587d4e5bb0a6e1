"""UNet forward patches installed for one sampling run and removed after: FreeU on the up-block inputs and the
middle-block self-attention recorder that SelfAttentionGuidance reads.

FreeU is ComfyUI's, not diffusers' ``enable_freeu``: diffusers scales by up-block index (the first two up blocks
get b1/s1 and b2/s2) and has no V2; ComfyUI scales every up-block input whose backbone part has 4× (b1, s1) or
2× (b2, s2) the model's base channel count, so its stages differ from diffusers' on SD1.x/SDXL. Each up-block
resnet here gets a forward pre-hook that splits its input back into the backbone ``h`` and the skip ``hsp``
(diffusers concatenates them right before the resnet) and applies ``patches.freeu_skip``.

Token merging (TomePatchModel) is ComfyUI's: tomesd's merge on the queries only of the full-resolution
self-attentions (tomesd's own ``apply_patch`` merges the whole attention input instead).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator


def _resnet_splits(unet: Any) -> list[tuple[Any, int]]:
    """(up-block resnet, channels of its backbone input) for every resnet of the UNet's up blocks."""
    out = []
    prev = int(unet.config.block_out_channels[-1])
    for block in unet.up_blocks:
        h_ch = prev
        for resnet in block.resnets:
            out.append((resnet, h_ch))
            h_ch = int(resnet.out_channels)
        prev = h_ch
    return out


@contextlib.contextmanager
def install_freeu(unet: Any, patch: Any) -> Iterator[None]:
    """FreeU ``patch`` (``patches.FreeU``) on ``unet``'s up blocks for the block."""
    from .patches import freeu_skip

    base = int(unet.config.block_out_channels[0])
    scales = {base * 4: (patch.b1, patch.s1), base * 2: (patch.b2, patch.s2)}
    handles = []

    def hook_for(h_ch: int) -> Any:
        b, s = scales[h_ch]

        def pre_hook(module: Any, args: tuple) -> tuple:
            import torch

            x = args[0]
            h, hsp = freeu_skip(x[:, :h_ch], x[:, h_ch:], b, s, patch.version)
            return (torch.cat([h, hsp], dim=1), *args[1:])

        return pre_hook

    try:
        for resnet, h_ch in _resnet_splits(unet):
            if h_ch in scales and int(resnet.in_channels) > h_ch:
                handles.append(resnet.register_forward_pre_hook(hook_for(h_ch)))
        yield
    finally:
        for handle in handles:
            handle.remove()


class Recorder:
    """The attention probabilities of the middle block's first self-attention, per UNet call since ``reset``."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def reset(self) -> None:
        """Forget what was recorded."""
        self.calls = []

    def first(self, batch: int) -> Any:
        """The first recorded call's maps for its first ``batch`` samples (the negative's: it is evaluated first),
        [batch · heads, tokens, tokens]; None when nothing was recorded."""
        if not self.calls:
            return None
        probs, calls_batch = self.calls[0]
        heads = probs.shape[0] // calls_batch
        return probs[: batch * heads]


class _RecordingProcessor:
    """diffusers' classic attention processor, keeping the softmax probabilities it computes."""

    def __init__(self, recorder: Recorder) -> None:
        from diffusers.models.attention_processor import AttnProcessor

        self.recorder, self.inner = recorder, AttnProcessor()

    def __call__(self, attn: Any, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        original = attn.get_attention_scores
        batch = hidden_states.shape[0]

        def scores(query: Any, key: Any, attention_mask: Any = None) -> Any:
            probs = original(query, key, attention_mask)
            self.recorder.calls.append((probs, batch))
            return probs

        attn.get_attention_scores = scores
        try:
            return self.inner(attn, hidden_states, *args, **kwargs)
        finally:
            del attn.get_attention_scores


def sag_attention(unet: Any) -> Any:
    """The UNet's middle-block first self-attention module (ComfyUI's ``middle`` 0, 0 attn1)."""
    try:
        return unet.mid_block.attentions[0].transformer_blocks[0].attn1
    except (AttributeError, IndexError):
        raise ValueError("SelfAttentionGuidance needs a UNet whose middle block has a transformer (SD1.x/SD2.x/"
                         "SDXL); remove the SelfAttentionGuidance node for this model") from None


@contextlib.contextmanager
def install_sag_recorder(unet: Any) -> Iterator[Recorder]:
    """Record the middle-block self-attention maps of ``unet`` for the block."""
    attn = sag_attention(unet)
    recorder = Recorder()
    original = attn.processor
    attn.set_processor(_RecordingProcessor(recorder))
    try:
        yield recorder
    finally:
        attn.set_processor(original)


# ---- token merging (TomePatchModel) ------------------------------------------------------------------------------

class _TomeProcessor:
    """Self-attention with ComfyUI's token merging: the queries of the full-resolution blocks merged by tomesd's
    bipartite soft matching (ratio of the tokens, 2×2 strides, random dst picks from ``state``'s generator), keys
    and values kept whole, the output unmerged."""

    def __init__(self, state: dict, ratio: float, original: Any) -> None:
        self.state, self.ratio, self.original = state, float(ratio), original

    def _functions(self, x: Any) -> Any:
        from tomesd.merge import bipartite_soft_matching_random2d  # type: ignore[import-untyped]

        _, _, height, width = self.state["shape"]
        downsample = int(math.ceil(math.sqrt((height * width) // x.shape[1])))
        if downsample > 1:
            return None
        h, w = int(math.ceil(height / downsample)), int(math.ceil(width / downsample))
        r = int(x.shape[1] * self.ratio)
        if r <= 0 or w == 1 or h == 1:
            return None
        return bipartite_soft_matching_random2d(x, w, h, 2, 2, r, no_rand=False, generator=self.state["generator"])

    def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None, attention_mask: Any = None,
                 *args: Any, **kwargs: Any) -> Any:
        import torch.nn.functional as F

        plain = (encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3
                 or attn.group_norm is not None or attn.spatial_norm is not None or attn.residual_connection)
        functions = None if plain or self.state.get("shape") is None else self._functions(hidden_states)
        if functions is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        merge, unmerge = functions
        batch, heads = hidden_states.shape[0], attn.heads
        query = attn.to_q(merge(hidden_states))
        key, value = attn.to_k(hidden_states), attn.to_v(hidden_states)
        dim = key.shape[-1] // heads
        q, k, v = (t.view(batch, -1, heads, dim).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, heads * dim)
        out = attn.to_out[1](attn.to_out[0](out.to(query.dtype)))
        return unmerge(out) / attn.rescale_output_factor


@contextlib.contextmanager
def install_tome(unet: Any, ratio: float, seed: int = 0) -> Iterator[None]:
    """Token merging on ``unet``'s down/up-block self-attentions for the block (ComfyUI's TomePatchModel)."""
    import torch

    try:
        import tomesd.merge  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise ValueError("TomePatchModel needs the tomesd package: pip install tomesd") from None
    state: dict[str, Any] = {"shape": None, "generator": torch.Generator("cpu").manual_seed(seed)}

    def remember(module: Any, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        state["shape"] = tuple(sample.shape)
        if state["generator"].device != sample.device:
            state["generator"] = torch.Generator(sample.device).manual_seed(seed)

    handles = [unet.register_forward_pre_hook(remember, with_kwargs=True)]
    swapped = []
    for block in (*unet.down_blocks, *unet.up_blocks):
        for transformer in getattr(block, "attentions", None) or ():
            for tb in getattr(transformer, "transformer_blocks", ()):
                original = tb.attn1.processor
                tb.attn1.set_processor(_TomeProcessor(state, ratio, original))
                swapped.append((tb.attn1, original))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for attn, original in swapped:
            attn.set_processor(original)
