"""Seeing diffusion: forward noising, noise-schedule plots and denoising trajectories, on any loaded UNet model.

Plots are drawn with Pillow (``nodegraph.training.plots``): it is already a dependency, and a few lines and labels
do not justify matplotlib's ~40 MB and font cache; Pillow's bitmap font also keeps the pixels deterministic.
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import (Boolean, Combo, Float, Int, Link, Node, Output, String, denoise_trajectory,
                           forward_noise, hookimpl, image_grid, line_plot, parse_timesteps, sampler_names,
                           sampling_sigmas, schedule_curves, scheduler_names, unsupported_pair)

SEED_MAX = 0xFFFFFFFFFFFFFFFF


def _vae_encode(ctx: Any, vae: Any, image: Any) -> Any:
    """IMAGE [B, H, W, 3] → unscaled latents (posterior mean), cropped to the VAE's grid."""
    with ctx.models.use(vae) as (v,), ctx.devices.use(v.vae):
        d = v.downscale
        h, w = image.shape[1] // d * d, image.shape[2] // d * d
        x = image[:, :h, :w, :3].movedim(-1, 1) * 2.0 - 1.0
        dtype = next(v.vae.parameters()).dtype
        return v.vae.encode(x.to(ctx.devices.device, dtype)).latent_dist.mean.float().cpu()


def _vae_decode(ctx: Any, vae: Any, latents: Any, chunk: int = 16) -> Any:
    """Unscaled latents → IMAGE [B, H, W, 3] in 0..1 (decoded in chunks)."""
    import torch

    with ctx.models.use(vae) as (v,), ctx.devices.use(v.vae), torch.no_grad():
        dtype = next(v.vae.parameters()).dtype
        out = []
        for i in range(0, latents.shape[0], chunk):
            x = v.vae.decode(latents[i:i + chunk].to(ctx.devices.device, dtype)).sample.float().cpu()
            out.append(((x + 1.0) / 2.0).clamp(0, 1).movedim(1, -1))
            ctx.check_interrupt()
        return torch.cat(out)


def _to_image(pixels: Any) -> Any:
    import torch

    return torch.from_numpy(pixels.astype("float32") / 255.0)[None]


class AddNoiseAtTimestep(Node):
    """Noise an image to timesteps of the model's schedule (forward diffusion), decoded: original vs noisy."""

    DISPLAY_NAME = "Add Noise At Timestep"
    CATEGORY = "sampling/explained"
    INPUTS = {"image": Link("IMAGE"), "vae": Link("VAE"), "model": Link("MODEL", tooltip="whose noise schedule"),
              "timesteps": String("0, 250, 500, 750, 999", tooltip="training timesteps, comma-separated, or a "
                                  "range with a count: '0-999/8'"),
              "seed": Int(0, min=0, max=SEED_MAX, tooltip="the seed of the noise"),
              "space": Combo(["latent", "pixel"], default="latent",
                             tooltip="latent: what the model is trained on (noised latents, decoded); pixel: the "
                                     "same schedule applied to the pixels, as textbooks draw it")}
    OUTPUTS = (Output("IMAGE", name="noisy", tooltip="for each timestep, the whole input batch"),
               Output("IMAGE", name="grid", tooltip="one image: a row per input image, a column per timestep"))

    @classmethod
    def validate_inputs(cls, config, **constants):
        text = constants.get("timesteps")
        if isinstance(text, str):
            try:
                parse_timesteps(text)
            except ValueError as exc:
                return [("timesteps", str(exc))]
        return []

    def execute(self, ctx, image: Any, vae: Any, model: Any, timesteps: str, seed: int, space: str):
        import torch

        ts = parse_timesteps(timesteps)
        with ctx.models.use(model) as (m,):
            fmt, config = m.latent, dict(m.scheduler_config)
        gen = torch.Generator("cpu").manual_seed(int(seed) % (2 ** 63))
        if space == "pixel":
            clean = image[..., :3].movedim(-1, 1) * 2.0 - 1.0
            noise = torch.randn(clean.shape, generator=gen)
            noisy = ((forward_noise(clean, noise, ts, config) + 1.0) / 2.0).clamp(0, 1).movedim(1, -1)
        else:
            latents = _vae_encode(ctx, vae, image)
            clean = (latents - fmt.shift_factor) * fmt.scaling_factor
            noise = torch.randn(clean.shape, generator=gen)
            scaled = forward_noise(clean, noise, ts, config)
            noisy = _vae_decode(ctx, vae, scaled / fmt.scaling_factor + fmt.shift_factor)
        b = image.shape[0]
        order = [t * b + i for i in range(b) for t in range(len(ts))]  # image-major for the grid
        grid = image_grid(noisy[order].numpy(), len(ts))
        return (noisy, torch.from_numpy(grid)[None])


class NoiseSchedulePlot(Node):
    """Plot the model's noise schedule per training timestep and the sigmas a sampler visits, as an image."""

    DISPLAY_NAME = "Noise Schedule Plot"
    CATEGORY = "sampling/explained"
    INPUTS = {"model": Link("MODEL"),
              "quantity": Combo(["alphas_cumprod", "sigmas", "snr", "all"], default="all",
                                tooltip="what to draw per training timestep (sigmas and SNR on a log scale)"),
              "sampler_name": Combo(sampler_names), "scheduler": Combo(scheduler_names),
              "steps": Int(20, min=1, max=1000, tooltip="the sampler's step count, for its sigma schedule"),
              "width": Int(512, min=128, max=4096, step=8), "height": Int(512, min=128, max=4096, step=8)}
    OUTPUTS = (Output("IMAGE"),)

    @classmethod
    def validate_inputs(cls, config, **constants):
        sampler, scheduler = constants.get("sampler_name"), constants.get("scheduler")
        reason = unsupported_pair(config, sampler, scheduler) if sampler and scheduler else None
        return [("scheduler", reason)] if reason else []

    def execute(self, ctx, model: Any, quantity: str, sampler_name: str, scheduler: str, steps: int, width: int,
                height: int):
        import numpy as np

        with ctx.models.use(model) as (m,):
            config = dict(m.scheduler_config)
        curves = schedule_curves(config)
        top_h = height // 2
        if quantity == "all":
            panels = [line_plot({"alphas_cumprod": curves["alphas_cumprod"]}, width, top_h // 2,
                                title="alphas_cumprod per timestep"),
                      line_plot({"sigma": curves["sigmas"], "SNR": curves["snr"]}, width, top_h - top_h // 2,
                                title="sigma and SNR per timestep (log)", xlabel="timestep", log_y=True)]
        else:
            log_y = quantity != "alphas_cumprod"
            panels = [line_plot({quantity: curves[quantity]}, width, top_h, xlabel="timestep", log_y=log_y,
                                title=f"{quantity} per timestep" + (" (log)" if log_y else ""))]
        sig = sampling_sigmas(sampler_name, scheduler, config, steps)
        panels.append(line_plot({f"{sampler_name} / {scheduler}": np.maximum(sig, 1e-3)}, width, height - top_h,
                                title=f"sigmas over {steps} sampling steps (log; last = 0)", xlabel="step",
                                log_y=True))
        return (_to_image(np.concatenate(panels, axis=0)),)


class DenoiseTrajectory(Node):
    """Sample and keep every step: the noisy latent and the model's guess of the clean image, decoded."""

    DISPLAY_NAME = "Denoise Trajectory"
    CATEGORY = "sampling/explained"
    INPUTS = {"model": Link("MODEL"), "positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"),
              "latent_image": Link("LATENT", tooltip="its shape sets the image size (its content is not used)"),
              "vae": Link("VAE"),
              "seed": Int(0, min=0, max=SEED_MAX), "steps": Int(20, min=1, max=200),
              "cfg": Float(4.0, min=0.0, max=100.0, step=0.1, round=0.01),
              "sampler_name": Combo(sampler_names), "scheduler": Combo(scheduler_names),
              "every": Int(1, min=1, max=100, tooltip="keep every n-th step (the last is always kept)"),
              "grid": Boolean(True, tooltip="also tile the steps as one image: latents above, x0 guesses below")}
    OUTPUTS = (Output("IMAGE", name="x0", tooltip="the model's clean-image prediction at each step"),
               Output("IMAGE", name="latents", tooltip="the noisy latent after each step, decoded"),
               Output("IMAGE", name="grid"))

    @classmethod
    def validate_inputs(cls, config, **constants):
        sampler, scheduler = constants.get("sampler_name"), constants.get("scheduler")
        reason = unsupported_pair(config, sampler, scheduler) if sampler and scheduler else None
        return [("scheduler", reason)] if reason else []

    def execute(self, ctx, model, positive, negative, latent_image, vae, seed, steps, cfg, sampler_name, scheduler,
                every, grid):
        import torch

        with ctx.models.use(model) as (m,), ctx.devices.use(m.unet):
            fmt = m.latent
            samples = latent_image["samples"]
            hw = latent_image.get("pixel_size")
            if hw is not None:
                shape = (samples.shape[0], fmt.channels, hw[0] // fmt.downscale, hw[1] // fmt.downscale)
            else:
                shape = (samples.shape[0], fmt.channels, *samples.shape[2:])
            gen = torch.Generator("cpu").manual_seed(int(seed) % (2 ** 63))
            noise = torch.randn(shape, generator=gen, dtype=torch.float32)
            device, dtype = ctx.devices.device, ctx.devices.dtype
            cond = positive[0][0].to(device, dtype)
            uncond = negative[0][0].to(device, dtype) if negative else None
            traj = denoise_trajectory(m.unet, m.scheduler_config, m.prediction_type, cond, uncond,
                                      noise.to(device, dtype), sampler_name, scheduler, steps, cfg, seed,
                                      on_step=ctx.progress)
        keep = [i for i in range(len(traj.x0)) if i % every == every - 1 or i == len(traj.x0) - 1]
        lat = torch.cat([traj.latents[i].float().cpu() for i in keep])
        x0 = torch.cat([traj.x0[i].float().cpu() for i in keep])
        lat_img = _vae_decode(ctx, vae, lat / fmt.scaling_factor + fmt.shift_factor)
        x0_img = _vae_decode(ctx, vae, x0 / fmt.scaling_factor + fmt.shift_factor)
        b = shape[0]
        cols = len(keep)
        if grid:
            # rows: for each batch item, its latents then its x0 guesses; columns: the kept steps
            order = []
            for i in range(b):
                order += [("l", k * b + i) for k in range(cols)] + [("x", k * b + i) for k in range(cols)]
            tiles = torch.stack([(lat_img if s == "l" else x0_img)[j] for s, j in order]).numpy()
            grid_img = torch.from_numpy(image_grid(tiles, cols))[None]
        else:
            grid_img = x0_img[-b:]
        return (x0_img, lat_img, grid_img)


@hookimpl
def nodegraph_nodes():
    """The nodes that show diffusion at work."""
    return [AddNoiseAtTimestep, NoiseSchedulePlot, DenoiseTrajectory]
