"""HunyuanDiT v1.1/v1.2 (ComfyUI's ``hunyuan_dit_1.2.safetensors`` all-in-one checkpoints) on diffusers'
``HunyuanDiT2DModel``: ``convert`` (original/ComfyUI names <-> diffusers), ``checkpoint`` (CheckpointLoaderSimple),
``text`` (BERT + mT5-XL prompts) and ``sampling`` (the transformer under KSampler's UNet path).
"""
