"""The trainer's LoRA layout: what the forward hooks trained is what lora.py applies from the file, diffusers' kohya
converter reads every pair of it, the base UNet is left bit-for-bit as it was, and a seed fixes the result."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from nodegraph._tiny import SCHEDULER_CONFIG, TEXT_HIDDEN, UNET_CONFIG
from nodegraph.diffusion import lora
from nodegraph.diffusion.types import DiffusionModel, LoraPatch
from nodegraph.training.lora_train import LoraTrainer, TrainData, TrainSettings, _hooked


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET_CONFIG).eval()


def _data() -> TrainData:
    g = torch.Generator().manual_seed(1)
    return TrainData(torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 6, TEXT_HIDDEN, generator=g))


def _train(unet, **kw) -> LoraTrainer:
    settings = TrainSettings(**{"steps": 3, "batch_size": 2, "learning_rate": 1e-2, "rank": 4, "targets": "all",
                                **kw})
    trainer = LoraTrainer(unet, SCHEDULER_CONFIG, _data(), settings)
    trainer.run()
    return trainer


def test_file_applied_by_lora_py_equals_the_trained_hooks(unet, tmp_path):
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    flags = [p.requires_grad for p in unet.parameters()]
    trainer = _train(unet)
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())  # base weights untouched
    assert [p.requires_grad for p in unet.parameters()] == flags
    path = tmp_path / "l.safetensors"
    save_file(trainer.factors().state_dict(), str(path))
    g = torch.Generator().manual_seed(2)
    x, emb, t = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 6, TEXT_HIDDEN, generator=g), torch.tensor([400])
    with torch.no_grad():
        base = unet(x, t, encoder_hidden_states=emb).sample
        with _hooked(trainer.layers, trainer.adapters):
            hooked = unet(x, t, encoder_hidden_states=emb).sample
        model = DiffusionModel(unet, SCHEDULER_CONFIG, "sd1", "tiny", loras=(LoraPatch("l", str(path), 1.0),))
        with lora.applied(model) as layers:
            from_file = unet(x, t, encoder_hidden_states=emb).sample
    assert layers == len(trainer.layers)
    assert (hooked - base).abs().max() > 1e-3
    assert torch.allclose(hooked, from_file, atol=1e-5), (hooked - from_file).abs().max()


def test_diffusers_kohya_converter_reads_every_pair(unet):
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers

    state = _train(unet, steps=1).factors().state_dict()
    converted, alphas = _convert_non_diffusers_lora_to_diffusers(dict(state))
    downs = [k for k in converted if k.endswith("lora.down.weight")]
    assert len(downs) == len([k for k in state if k.endswith(".lora_down.weight")])
    modules = dict(unet.named_modules())
    # diffusers spells attention layers the attention-processor way (…attn1.processor.to_q_lora…), as lora.py reads
    names = [lora._normalise(k.removeprefix("unet.").removesuffix(".down.weight").removesuffix(".lora"))
             for k in downs]
    assert all(n in modules for n in names), [n for n in names if n not in modules][:3]
    assert set(alphas.values()) == {4.0}


def test_same_seed_same_factors_other_seed_differs(unet):
    a, b, c = (_train(unet, seed=s).factors().state_dict() for s in (5, 5, 6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_bad_settings_are_refused(unet):
    with pytest.raises(ValueError, match="one caption per image"):
        LoraTrainer(unet, SCHEDULER_CONFIG, TrainData(torch.zeros(2, 4, 8, 8), torch.zeros(3, 6, TEXT_HIDDEN)),
                    TrainSettings())
    with pytest.raises(ValueError, match="optimizer"):
        LoraTrainer(unet, SCHEDULER_CONFIG, _data(), TrainSettings(optimizer="Lion"))


def test_sdxl_pooled_text_and_size_ids_reach_the_unet():
    from nodegraph._tiny import SDXL_UNET_CONFIG, TEXT2_HIDDEN

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SDXL_UNET_CONFIG).eval()
    positive = [(torch.randn(1, 6, TEXT_HIDDEN + TEXT2_HIDDEN), {"pooled_output": torch.randn(1, TEXT2_HIDDEN)})]
    data = TrainData.from_conditioning(torch.randn(3, 4, 8, 8), positive, downscale=8)
    assert data.embeddings.shape[0] == 3 and data.added["time_ids"][0].tolist() == [64, 64, 0, 0, 64, 64]
    trainer = LoraTrainer(unet, SCHEDULER_CONFIG, data, TrainSettings(steps=2, batch_size=2, rank=2))
    trainer.run()
    assert len(trainer.losses) == 2 and all(v == v for v in trainer.losses)
