"""LTX-2 (Lightricks, 19B audio-video) on diffusers' classes: text-to-video with its sound.

- ``files``: transformer files (ComfyUI/original or diffusers layout) → MODEL; shipped configs; parameter counts.
- ``vae``: the video VAE (``AutoencoderKLLTX2Video``) behind LTX-Video's image-VAE wrapper.
- ``audio``: the audio VAE + vocoder (LTXVAudioVAELoader); ``text``: Gemma-3 + connectors (LTXAVTextEncoderLoader).
- ``sampling``: the joint audio-video denoiser on LTX-Video's schedules; ``checkpoint``: all-in-one files.
- ``public``: what nodes/ltx2.py uses (through ``nodegraph.api``).
"""
