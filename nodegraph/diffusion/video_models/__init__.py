"""Video diffusion models on diffusers' classes: Wan 2.1 / 2.2 (LTX-Video lives in ``nodegraph.diffusion.ltx``).

- ``wan_files``: Wan transformer files (ComfyUI/original or diffusers layout) → MODEL; shipped configs and sizes.
- ``wan_vae``: the Wan video VAE (``AutoencoderKLWan``) behind the VAE interface the image nodes use, so VAEDecode
  returns a video's frames as an IMAGE batch and VAEEncode turns frames into one video latent.
- ``wan_text``: UMT5-XXL text encoders (CLIPLoader type ``wan``), their SentencePiece vocabulary, prompt encoding.
- ``wan_sampling``: KSampler/KSamplerAdvanced on a Wan model (flow matching, ModelSamplingSD3's shift).
- ``wan_custom``: SamplerCustomAdvanced (CFGGuider/BasicGuider, BasicScheduler) on a Wan model.

Video LATENTs are ``[B, C, T, h, w]`` raw VAE latents (ComfyUI's convention); the per-channel normalisation of the
Wan VAE (``latents_mean``/``latents_std``) is applied around the transformer only.
"""

from __future__ import annotations
