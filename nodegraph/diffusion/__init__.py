"""Diffusion support on diffusers: model types passed between nodes, loading, devices, sampling.

Importing this package is cheap; submodules import torch/diffusers when used.
"""
