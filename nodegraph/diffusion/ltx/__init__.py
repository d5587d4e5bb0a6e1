"""LTX-Video (Lightricks) on diffusers' classes: text-to-video and image-to-video with the 2B 0.9.x models.

- ``files``: transformer files (original/ComfyUI or diffusers layout) → MODEL; shipped configs; parameter counts.
- ``vae``: ``AutoencoderKLLTXVideo`` behind the image-VAE interface (VAEDecode → the frames as an IMAGE batch).
- ``text``: T5-XXL (CLIPLoader type ``ltxv``) and prompt encoding with its attention mask.
- ``sampling``: KSampler and SamplerCustom on an LTX model; LTXVScheduler's sigmas.
- ``checkpoint``: all-in-one files (``ltx-video-2b-v0.9*.safetensors``: transformer + VAE) for CheckpointLoaderSimple.
- ``guides``: LTXVAddGuide / LTXVCropGuides (appended guide frames and their positions); ``preprocess``: LTXVPreprocess.
"""
