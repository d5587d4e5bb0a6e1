"""Stable Video Diffusion (SVD, SVD-XT): single files, sampling convention, per-frame guidance (see the modules)."""
