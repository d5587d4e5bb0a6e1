"""Genmo Mochi 1 preview: transformer/VAE/T5 files (``files``, ``vae``, ``text``, ``checkpoint``) and its denoiser
under the shared flow loop (``sampling``); plugged in through ``nodegraph.diffusion.families``."""
