"""Cosmos Predict2 (2B/14B text-to-image and video2world) on diffusers' and transformers' classes (issue #15,
family 4).

- ``detect``: transformer layouts (NVIDIA/ComfyUI ``net.`` names, diffusers names) and configs from shapes.
- ``loading``: the transformer (UNETLoader), the old T5-XXL text encoder (CLIPLoader type cosmos).
- ``text``: the prompt encoding (512-token padded, masked T5).
- ``sampling``: ``CosmosFlow`` (ComfyUI's EDM sigmas) and ``CosmosDenoiser`` under the shared flow loop; video
  latents normalised around it, video2world's given frames (a noise mask) kept clean at time 0.
The VAE (Wan 2.1's) loads through ``video_models.wan_vae``.
"""
