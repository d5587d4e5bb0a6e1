"""AuraFlow (0.1–0.3) on diffusers' and transformers' classes (issue #15, family 4).

- ``detect``: transformer layouts (original/ComfyUI names, diffusers names) and configs from shapes; Pile-T5-XL.
- ``loading``: the transformer (UNETLoader), Pile-T5-XL and its tokenizer (read beside the file, not shipped).
- ``checkpoint``: ComfyUI's all-in-one ``aura_flow_0.x.safetensors`` (CheckpointLoaderSimple).
- ``text``: the prompt encoding (256-token padded, masked T5), shared with Cosmos.
- ``sampling``: ``AuraDenoiser``, what ``flow.sampling.FlowDenoiser`` becomes for ``family == "auraflow"``.
The VAE is SDXL's 4-channel AutoencoderKL.
"""
