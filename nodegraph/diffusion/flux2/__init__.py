"""Flux.2 (dev, Klein) on diffusers' classes: file detection and conversion (``detect``, ``loading``), the VAE in
the transformer's packed, normalised latent space (``vae``), prompt encoding (``text``) and the denoiser under the
shared flow loop with Flux2Scheduler's sigmas (``sampling``). Everything plugs in through ``families.py``."""
