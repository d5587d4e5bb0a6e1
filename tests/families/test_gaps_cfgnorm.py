"""CFGNorm: recorded on the MODEL as a patch, applied to the guided x0 of the flow sampler (Flux, SD3, Qwen-Image)
and of the UNet paths (``patches.Active.guide``), as ComfyUI's post-cfg function."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_flux_parity import _run, graph

from nodegraph.diffusion.flow.sampling import FlowDenoiser
from nodegraph.diffusion.patches import Active, CFGNorm, Step, patches_of
from nodegraph.testing_graphs import capture_engine


def _expected(cond: torch.Tensor, guided: torch.Tensor, strength: float) -> torch.Tensor:
    """ComfyUI's formula, written out independently: per-pixel channel norms, ratio clamped to [0, 1]."""
    n_cond = cond.pow(2).sum(1, keepdim=True).sqrt()
    n_out = guided.pow(2).sum(1, keepdim=True).sqrt()
    return guided * torch.minimum(n_cond / (n_out + 1e-8), torch.ones(())) * strength


class _Fixed(FlowDenoiser):
    """A FlowDenoiser whose model predictions are fixed tensors (the guidance arithmetic alone)."""

    def split(self, x, sigma):
        return self.fixed


def _denoiser(patches, cfg: float, cond, uncond):
    model = SimpleNamespace(unet=None, latent=None, family="flux", patches=patches,
                            flow=SimpleNamespace(multiplier=1.0, skip_layer_guidance=()))
    entry = [(torch.zeros(1, 4, 8), {"pooled_output": torch.zeros(1, 8)})]
    d = _Fixed(model, entry, entry, cfg, torch.float32, "cpu")
    d.fixed = (cond, uncond)
    return d


def test_flow_guidance_applies_cfg_norm():
    """The flow denoiser's guided x0 is CFG then CFGNorm (two recorded: applied in turn); none: plain CFG."""
    g = torch.Generator().manual_seed(0)
    cond, uncond, x = (torch.randn(2, 16, 4, 6, generator=g) for _ in range(3))
    plain = uncond + 4.0 * (cond - uncond)
    assert torch.allclose(_denoiser((), 4.0, cond, uncond)(x, 0.5), plain)
    out = _denoiser((CFGNorm(0.8),), 4.0, cond, uncond)(x, 0.5)
    assert torch.allclose(out, _expected(cond, plain, 0.8), atol=1e-6)
    assert float((out - plain).abs().max()) > 0.1
    twice = _denoiser((CFGNorm(0.8), CFGNorm(1.5)), 4.0, cond, uncond)(x, 0.5)
    assert torch.allclose(twice, _expected(cond, _expected(cond, plain, 0.8), 1.5), atol=1e-6)


def test_unet_guidance_applies_cfg_norm():
    """``Active.guide`` (the UNet paths) applies CFGNorm after classifier-free guidance."""
    g = torch.Generator().manual_seed(1)
    cond, uncond, x = (torch.randn(1, 4, 8, 8, generator=g) for _ in range(3))
    step = Step(x=x, sigma=2.0, cfg=6.0, cond=cond, uncond=uncond, denoise=None, unconds=[], encode=None)
    out = Active((CFGNorm(1.0),), None).guide(step)
    assert torch.allclose(out, _expected(cond, uncond + 6.0 * (cond - uncond), 1.0), atol=1e-6)


@pytest.fixture(scope="module")
def engine(flux_config):
    return capture_engine(flux_config)


def test_cfg_norm_node_on_flux(engine):
    """UNETLoader → CFGNorm → KSampler (cfg 4): the patch is on the MODEL, the image changes; strength 1 at cfg 1
    leaves it unchanged (the ratio is 1 up to 1e-8)."""
    from flux_tiny import LAYOUTS

    wf = graph(LAYOUTS["comfyui"])
    wf["ks"]["inputs"]["cfg"] = 4.0
    plain = _run(engine, wf)["img"]
    wf["norm"] = {"class_type": "CFGNorm", "inputs": {"model": ["msf", 0], "strength": 0.5}}
    wf["ks"]["inputs"]["model"] = ["norm", 0]
    wf["patched"] = {"class_type": "Capture", "inputs": {"value": ["norm", 0]}}
    cap = _run(engine, wf)
    assert patches_of(cap["patched"]) == (CFGNorm(0.5),)
    assert float((cap["img"] - plain).abs().max()) > 1e-2
    wf["ks"]["inputs"]["cfg"] = 1.0
    wf["norm"]["inputs"]["strength"] = 1.0
    one = _run(engine, wf)["img"]
    del wf["norm"], wf["patched"]
    wf["ks"]["inputs"]["model"] = ["msf", 0]
    assert float((one - _run(engine, wf)["img"]).abs().max()) < 1e-4


def test_flow_guidance_applies_latent_operation_cfg_before_cfg():
    """LatentApplyOperationCFG on a flow model: the operation on cond - uncond (plus uncond), then CFG."""
    from nodegraph.diffusion.patches import LatentOperationCFG

    g = torch.Generator().manual_seed(2)
    cond, uncond, x = (torch.randn(1, 16, 4, 6, generator=g) for _ in range(3))
    out = _denoiser((LatentOperationCFG(lambda latent: latent * 3.0),), 4.0, cond, uncond)(x, 0.5)
    assert torch.allclose(out, uncond + 4.0 * 3.0 * (cond - uncond), atol=1e-5)
    alone = _denoiser((LatentOperationCFG(lambda latent: -latent),), 1.0, cond, None)(x, 0.5)
    assert torch.allclose(alone, -cond)
