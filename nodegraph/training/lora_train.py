"""Train a LoRA on a diffusers UNet: low-rank factors added by forward hooks, never touching the base weights.

The factors are trained directly (not through PEFT) because (1) the base UNet is the engine's cached model, shared
by every node: hooks add ``scale · up(down(x))`` to a layer's output and are removed afterwards, leaving the
module tree and its weights exactly as they were (PEFT replaces modules in place); (2) the trained ``down``/``up``
matrices are exactly the ``lora_down``/``lora_up`` pair ``nodegraph.diffusion.lora`` applies (``delta = alpha/rank ·
up @ down``), so a LoRA applied in-graph and one read back from its file are the same numbers by construction;
(3) no extra dependency. Files use the kohya layout with diffusers module names
(``lora_unet_down_blocks_0_attentions_0_…_to_q.lora_down.weight`` + ``.alpha``), which nodegraph, ComfyUI and
diffusers' ``load_lora_weights`` all read.

Deterministic on the CPU for a seed: one ``torch.Generator`` draws the initial factors, then each step's batch,
timesteps and noise.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

if TYPE_CHECKING:  # torch is imported when training starts, so ``nodegraph.api`` stays light
    import torch
    from torch import nn

OPTIMIZERS = ("AdamW", "Adam", "SGD", "RMSprop")
LOSSES = ("MSE", "L1", "Huber", "SmoothL1")
TARGETS = ("attention", "all")


@dataclass(frozen=True)
class TrainSettings:
    """What TrainLoraNode asks for (ComfyUI's inputs, plus min-SNR weighting and the layer set)."""

    steps: int = 16
    batch_size: int = 1
    learning_rate: float = 5e-4
    rank: int = 8
    optimizer: str = "AdamW"
    loss: str = "MSE"
    seed: int = 0
    dtype: str = "fp32"  # "fp32" | "bf16" (autocast)
    gradient_checkpointing: bool = False
    min_snr_gamma: float = 0.0  # 0: off; 5 is the usual value
    targets: str = "attention"  # "attention": layers of the transformer blocks; "all": every conv/linear layer
    grad_accumulation: int = 1  # batches whose gradients make one optimizer step


@dataclass
class LoraFactors:
    """Trained low-rank factors keyed by the diffusers module name (``down_blocks.0.attentions.0…to_q``)."""

    down: dict[str, torch.Tensor]
    up: dict[str, torch.Tensor]
    alpha: float
    steps: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The kohya-layout tensors (``lora_unet_<name>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``)."""
        import torch

        out: dict[str, torch.Tensor] = {}
        for name in sorted(self.down):
            key = "lora_unet_" + name.replace(".", "_")
            out[f"{key}.lora_down.weight"] = self.down[name].detach().contiguous().clone()
            out[f"{key}.lora_up.weight"] = self.up[name].detach().contiguous().clone()
            out[f"{key}.alpha"] = torch.tensor(float(self.alpha))
        return out


@functools.cache
def _adapter_class() -> type:
    from torch import nn

    class Adapter(nn.Module):
        """``scale · up(down(x))`` for one Linear or Conv2d layer (down has the layer's kernel, up is 1×1)."""

        def __init__(self, layer: nn.Module, rank: int, alpha: float, gen: torch.Generator) -> None:
            super().__init__()
            _init(self, layer, rank, alpha, gen)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """The low-rank addition to the layer's output for its input ``x``."""
            down, up = self.down.to(x.dtype), self.up.to(x.dtype)
            if self.conv:
                h = nn.functional.conv2d(x, down, None, self.stride, self.padding, self.dilation)
                return nn.functional.conv2d(h, up) * self.scale
            return nn.functional.linear(nn.functional.linear(x, down), up) * self.scale

    return Adapter


def _init(self: Any, layer: Any, rank: int, alpha: float, gen: Any) -> None:
    import torch
    from torch import nn

    w = layer.weight
    self.conv = isinstance(layer, nn.Conv2d)
    rank = min(rank, w.shape[0], int(math.prod(w.shape[1:])))
    down_shape = (rank, *w.shape[1:])
    fan_in = int(math.prod(w.shape[1:]))
    bound = 1.0 / math.sqrt(fan_in)
    self.down = nn.Parameter((torch.rand(down_shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound)
    up_shape = (w.shape[0], rank, 1, 1) if self.conv else (w.shape[0], rank)
    self.up = nn.Parameter(torch.zeros(up_shape, dtype=torch.float32))
    self.scale = alpha / rank
    if self.conv:
        self.stride, self.padding, self.dilation = layer.stride, layer.padding, layer.dilation


def target_layers(unet: nn.Module, targets: str = "attention") -> dict[str, nn.Module]:
    """The layers a LoRA trains: Linear/Conv2d inside transformer blocks ("attention") or all of them ("all")."""
    from torch import nn

    out: dict[str, nn.Module] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        if targets == "all" or ".attentions." in f".{name}" or "transformer_blocks" in name:
            out[name] = module
    if not out:
        raise ValueError("this model has no attention layers to train a LoRA on; use targets='all'")
    return out


def training_target(prediction_type: str, clean: torch.Tensor, noise: torch.Tensor,
                    alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the model should output at timesteps ``t``: the noise (epsilon), the velocity (v) or the clean sample."""
    a = alphas_cumprod[t].float().view(-1, 1, 1, 1)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return a.sqrt() * noise - (1 - a).sqrt() * clean
    if prediction_type == "sample":
        return clean
    raise ValueError(f"prediction type {prediction_type!r} cannot be trained here (epsilon, v_prediction or sample)")


def snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights per sample (Hang et al. 2023), for the model's prediction type."""
    import torch

    a = alphas_cumprod[t].float()
    snr = a / (1 - a)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    if prediction_type == "sample":
        return clipped
    return clipped / snr


def _loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from torch import nn

    fns = {"MSE": nn.functional.mse_loss, "L1": nn.functional.l1_loss, "Huber": nn.functional.huber_loss,
           "SmoothL1": nn.functional.smooth_l1_loss}
    if name not in fns:
        raise ValueError(f"loss {name!r} is not one of {', '.join(LOSSES)}")
    fn = fns[name]
    return lambda pred, target: fn(pred, target, reduction="none").flatten(1).mean(1)


def _optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    import torch

    table = {"AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam, "SGD": torch.optim.SGD,
             "RMSprop": torch.optim.RMSprop}
    if name not in table:
        raise ValueError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    return table[name](params, lr=lr)


@contextlib.contextmanager
def _hooked(layers: Mapping[str, nn.Module], adapters: Mapping[str, Any]) -> Iterator[None]:
    handles = []
    try:
        for name, layer in layers.items():
            adapter = adapters[name]
            handles.append(layer.register_forward_hook(lambda m, args, out, a=adapter: out + a(args[0])))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _training_mode(unet: nn.Module, checkpointing: bool) -> Iterator[None]:
    """Freeze the base weights (restoring requires_grad, train/eval and checkpointing afterwards)."""
    flags = [(p, p.requires_grad) for p in unet.parameters()]
    was_training = unet.training
    had_ckpt = bool(getattr(unet, "is_gradient_checkpointing", False))
    try:
        unet.requires_grad_(False)
        unet.eval()  # no dropout in a LoRA run; diffusers UNets have none by default anyway
        if checkpointing and hasattr(unet, "enable_gradient_checkpointing"):
            unet.enable_gradient_checkpointing()
        yield
    finally:
        if checkpointing and not had_ckpt and hasattr(unet, "disable_gradient_checkpointing"):
            unet.disable_gradient_checkpointing()
        for p, flag in flags:
            p.requires_grad_(flag)
        unet.train(was_training)


@dataclass
class TrainData:
    """The training set: scaled latents [N, C, h, w] and text embeddings [N, T, D] (plus optional SDXL extras)."""

    latents: torch.Tensor
    embeddings: torch.Tensor
    added: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_conditioning(cls, latents: torch.Tensor, positive: list, downscale: int = 8) -> "TrainData":
        """Scaled latents [N, …] and a CONDITIONING with one entry per image (or one for all); SDXL's pooled text
        and size ids are kept when the entries carry ``pooled_output``."""
        import torch

        count = int(latents.shape[0])
        entries = list(positive) * (count if len(positive) == 1 else 1)
        if not positive or len(entries) != count:
            raise ValueError(f"TrainLoraNode positive: {len(positive)} conditioning entries for {count} latents; "
                             "give one per image or one for all")
        if len({e[0].shape[1] for e in entries}) > 1:
            raise ValueError("TrainLoraNode positive: captions of different token lengths; keep every caption "
                             "within one token window")
        emb = torch.cat([e[0][:1] for e in entries]).float()
        pooled = [e[1].get("pooled_output") for e in entries]
        added = None
        if all(p is not None for p in pooled):
            h, w = (int(v) * downscale for v in latents.shape[-2:])
            added = {"text_embeds": torch.cat([p[:1] for p in pooled]).float(),
                     "time_ids": torch.tensor([[h, w, 0, 0, h, w]] * count, dtype=torch.float32)}
        return cls(latents, emb, added)

    def sha256(self) -> str:
        """A hash of the training set (latents and text embeddings), for the LoRA's provenance."""
        import hashlib

        digest = hashlib.sha256()
        for t in (self.latents, self.embeddings):
            digest.update(t.detach().float().contiguous().numpy().tobytes())
        return digest.hexdigest()


class LoraTrainer:
    """One LoRA training run; ``losses`` and ``factors()`` hold what was learnt so far, even after an interrupt."""

    def __init__(self, unet: nn.Module, scheduler_config: Mapping[str, Any], data: TrainData,
                 settings: TrainSettings, initial: Mapping[str, Any] | None = None) -> None:
        import diffusers
        import torch

        if data.latents.shape[0] != data.embeddings.shape[0]:
            raise ValueError(f"{data.latents.shape[0]} latents but {data.embeddings.shape[0]} captions; give one "
                             "caption per image or one for all")
        if settings.steps < 1 or settings.batch_size < 1 or settings.rank < 1:
            raise ValueError("steps, batch_size and rank must be at least 1")
        self.unet, self.data, self.settings = unet, data, settings
        config = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
        self.prediction_type = str(config.get("prediction_type", "epsilon"))
        if "shift" in config or "FlowMatch" in str(scheduler_config.get("_class_name", "")):
            raise ValueError("flow-matching models cannot be trained by TrainLoraNode yet (only UNet models with "
                             "an epsilon, v_prediction or sample objective)")
        self.alphas_cumprod = diffusers.DDPMScheduler.from_config(config).alphas_cumprod.float()
        self.gen = torch.Generator("cpu").manual_seed(int(settings.seed))
        self.layers = target_layers(unet, settings.targets)
        self.alpha = float(settings.rank)
        adapter = _adapter_class()
        self.adapters = {n: adapter(m, settings.rank, self.alpha, self.gen) for n, m in self.layers.items()}
        if initial:
            self._load(initial)
        params = [p for a in self.adapters.values() for p in a.parameters()]
        self.optimizer = _optimizer(settings.optimizer, params, settings.learning_rate)
        self.loss_fn = _loss_fn(settings.loss)
        self.losses: list[float] = []
        self.step = 0

    def _load(self, state: Mapping[str, Any]) -> None:
        """Start from a saved LoRA's factors (kohya keys); its alpha/rank scale is kept."""
        import torch

        found = 0
        for name, adapter in self.adapters.items():
            key = "lora_unet_" + name.replace(".", "_")
            down, up = state.get(f"{key}.lora_down.weight"), state.get(f"{key}.lora_up.weight")
            if down is None or up is None:
                continue
            if tuple(down.shape) != tuple(adapter.down.shape) or tuple(up.shape) != tuple(adapter.up.shape):
                raise ValueError(f"existing LoRA layer {key} has rank {down.shape[0]}, not {adapter.down.shape[0]}; "
                                 "train it on with the same rank")
            with torch.no_grad():
                adapter.down.copy_(down.float())
                adapter.up.copy_(up.float())
            alpha = state.get(f"{key}.alpha")
            if alpha is not None:
                self.alpha = float(alpha)
                adapter.scale = self.alpha / adapter.down.shape[0]
            found += 1
        if not found:
            raise ValueError("the existing LoRA matches none of the layers being trained; pick a LoRA trained on "
                             "this model with the same target layers")

    def factors(self) -> LoraFactors:
        """The LoRA learnt so far (a copy)."""
        return LoraFactors({n: a.down.detach().clone() for n, a in self.adapters.items()},
                           {n: a.up.detach().clone() for n, a in self.adapters.items()},
                           self.alpha, self.step)

    def _loss(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        import torch

        n = self.data.latents.shape[0]
        bs = self.settings.batch_size
        idx = torch.cat([torch.randperm(n, generator=self.gen) for _ in range(-(-bs // n))])[:bs]
        clean = self.data.latents[idx].float()
        noise = torch.randn(clean.shape, generator=self.gen)
        t = torch.randint(0, len(self.alphas_cumprod), (bs,), generator=self.gen)
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        target = training_target(self.prediction_type, clean, noise, self.alphas_cumprod, t)
        emb = self.data.embeddings[idx]
        added = {k: v[idx].to(device) for k, v in self.data.added.items()} if self.data.added else None
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == torch.bfloat16 \
            else contextlib.nullcontext()
        with autocast:
            pred = self.unet(noisy.to(device), t.to(device), encoder_hidden_states=emb.to(device),
                             added_cond_kwargs=added).sample
        per_sample = self.loss_fn(pred.float(), target.to(device))
        if self.settings.min_snr_gamma > 0:
            per_sample = per_sample * snr_weights(self.alphas_cumprod, t, self.settings.min_snr_gamma,
                                                  self.prediction_type).to(device)
        return per_sample.mean()

    def run(self, on_step: Callable[[int, int, float], None] | None = None, device: Any = "cpu") -> LoraFactors:
        """Train the remaining steps; ``on_step(step, total, loss)`` may raise to stop (what was learnt stays)."""
        import torch

        device = torch.device(device)
        dtype = torch.bfloat16 if self.settings.dtype == "bf16" else torch.float32
        for a in self.adapters.values():
            a.to(device)
        with torch.inference_mode(False), torch.enable_grad(), \
                _training_mode(self.unet, self.settings.gradient_checkpointing), _hooked(self.layers, self.adapters):
            acc = max(1, int(self.settings.grad_accumulation))
            while self.step < self.settings.steps:
                self.optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for _ in range(acc):
                    loss = self._loss(device, dtype) / acc
                    loss.backward()
                    total += float(loss.detach())
                self.optimizer.step()
                self.step += 1
                self.losses.append(total)
                if on_step is not None:
                    on_step(self.step, self.settings.steps, self.losses[-1])
        return self.factors()
