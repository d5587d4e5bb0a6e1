"""HiDream-I1 (full, dev, fast) on diffusers' ``HiDreamImageTransformer2DModel`` (issue #15, family 4).

- ``detect``: the transformer's and Llama's layouts and configs from tensor names and shapes (shipped configs in
  ``configs/hidream``).
- ``loading``: the transformer (UNETLoader), the four text encoders (QuadrupleCLIPLoader, CLIPLoader/DualCLIPLoader
  type ``hidream``): long CLIP-L and CLIP-G with projections, T5-XXL, Llama-3.1-8B-Instruct + its tokenizer.
- ``text``: HiDreamImagePipeline's prompt encoding (pooled CLIP-L ⊕ CLIP-G, T5 states, every Llama layer's states).
- ``sampling``: ``HiDreamDenoiser``, what ``flow.sampling.FlowDenoiser`` becomes for ``family == "hidream"``.
The VAE is Flux.1's 16-channel ``ae.safetensors`` (VAELoader).
"""
