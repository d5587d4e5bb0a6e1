"""Diffusion transformers with flow matching (Flux.1, SD3/SD3.5; built so Qwen-Image and Chroma reuse it).

- ``detect``: the family, variant and key layout of a split file from its header; the config from its shapes.
- ``convert``: Flux weights between the original (BFL/ComfyUI) and diffusers names.
- ``loading``: transformers and text encoders straight into their dtype, T5's tokenizer, VAE overrides.
- ``schedule``: ``FlowSettings`` (ComfyUI's ModelSamplingFlux / DiscreteFlow), the schedulers on flow sigmas.
- ``sampling``: KSampler's semantics on a flow model (the dispatch from ``diffusion.sampling.sample``);
  ``custom``: BasicScheduler/SamplerCustomAdvanced for flow models; ``checkpoint``: all-in-one Flux files.
- ``text``: CLIP-L + T5 prompt encoding; ``latents``: 2×2 patch tokens and position ids.
- ``sd3``: SD3/SD3.5 (MMDiT, MMDiT-X) detection, loading, model call; ``sd3_text``: CLIP-L + CLIP-G + T5 (any
  missing) as ComfyUI combines them.
- ``public``: what the node packs use, exported through ``nodegraph.api``.
"""
