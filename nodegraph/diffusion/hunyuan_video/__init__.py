"""HunyuanVideo 1.0 on diffusers' and transformers' classes (issue #16).

- ``files``: the transformer (UNETLoader; ComfyUI's, the original and diffusers' layouts), shipped configs.
- ``vae``: the video VAE (VAELoader; ComfyUI's LDM-style and diffusers' layouts).
- ``text``: CLIP-L + llava-llama-3 (DualCLIPLoader type hunyuan_video), the pipeline's prompt template and crop.
- ``sampling``: ``HunyuanVideoDenoiser``, what ``flow.sampling.FlowDenoiser`` becomes for
  ``family == "hunyuan_video"`` (the shared flow loop samples the 5-D latent).
"""
