"""Qwen-Image and Qwen-Image-Edit on diffusers' and transformers' classes (issue #15, family 3).

- ``detect``: transformer/text-encoder layouts and configs from tensor names and shapes (shipped configs beneath).
- ``loading``: the transformer (UNETLoader), Qwen2.5-VL + its tokenizer (CLIPLoader type qwen_image), fp8_scaled.
- ``text``: QwenImagePipeline's prompt template (and the edit template with vision tokens).
- ``sampling``: ``QwenDenoiser``, what ``flow.sampling.FlowDenoiser`` becomes for ``family == "qwen_image"``.
- ``edit``: TextEncodeQwenImageEdit/Plus (vision-tower images, reference latents).
The VAE (Wan 2.1's architecture) loads through ``video_models.wan_vae``.
"""
