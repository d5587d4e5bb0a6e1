"""Z-Image and Lumina-Image 2.0 (issue #15, family 4) on diffusers' and transformers' classes.

Both are ComfyUI's NextDiT ("lumina2" image model): Z-Image is the 3840-wide variant with Qwen3-4B text states,
Lumina 2 the 2304-wide one with Gemma-2-2B text states; both use Flux.1's 16-channel VAE.

- ``detect``: which of the two a transformer file holds (ComfyUI/original or diffusers names) and its config.
- ``convert``: ComfyUI/original tensor names -> diffusers' ``ZImageTransformer2DModel``/``Lumina2Transformer2DModel``.
- ``loading``: the transformer (UNETLoader) and the text encoder + tokenizer (CLIPLoader type lumina2: Qwen3 or
  Gemma 2, whichever the file holds).
- ``text``: the prompt as ComfyUI and the pipelines encode it (second-to-last hidden states).
- ``sampling``: ``ZImageDenoiser``/``Lumina2Denoiser``, the ``flow.sampling.FlowDenoiser`` of each family, with
  RenormCFG.
"""
