"""Stable Cascade: stage C (prior) and stage B (decoder) UNets, stage A (Paella VQGAN) and CLIP-G, on diffusers."""
