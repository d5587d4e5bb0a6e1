"""UniPC (Zhao et al. 2023, arXiv:2302.04867): the unified predictor-corrector multistep solver in data prediction,
order 3 with lower orders at the start and at the end, in t = -log(sigma).

Each step predicts x_next with UniP from the last x0 estimates, evaluates the model there, and corrects x_next with
UniC using that evaluation (which then serves the next step: one evaluation per step); the last step is not
corrected. ``bh1`` takes B(h) = h, ``bh2`` B(h) = e^h - 1. As ComfyUI's, a final sigma of 0 is replaced by 0.001
(the log-SNR step to 0 is infinite), so the result carries that much noise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._common import Steps, floats

if TYPE_CHECKING:
    import torch

    from ..custom import Denoiser, StepCallback

_END = 0.001


def _coefficients(rks: list[float], hh: float, variant: str) -> tuple[list[list[float]], list[float], float]:
    """(R, b, B(h)): R[k][j] = rks[j]^k for the order conditions, b[k] = k! h*phi_(k+2)-type terms / B(h)."""
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    b_h = hh if variant == "bh1" else math.expm1(hh)
    rows, rhs, factorial = [], [], 1
    for k in range(1, len(rks) + 1):
        rows.append([r ** (k - 1) for r in rks])
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return rows, rhs, b_h


def _solve(rows: list[list[float]], rhs: list[float]) -> list[float]:
    import numpy as np

    return [float(v) for v in np.linalg.solve(np.asarray(rows, dtype=np.float64), np.asarray(rhs, dtype=np.float64))]


def _update(x: torch.Tensor, models: list[Any], lams: list[float], lam_t: float, sigma_t: float, sigma_0: float,
            order: int, variant: str, evaluate: Any, correct: bool) -> tuple[Any, Any]:
    """One UniPC step of ``order`` from the newest point (models/lams oldest first) to lam_t: (x_next, model(x_next)
    or None when not corrected)."""
    m0, l0 = models[-1], lams[-1]
    h = lam_t - l0
    hh = -h
    rks, diffs = [], []
    for k in range(1, order):
        rk = (lams[-(k + 1)] - l0) / h
        rks.append(rk)
        diffs.append((models[-(k + 1)] - m0) / rk)
    rks.append(1.0)
    rows, rhs, b_h = _coefficients(rks, hh, variant)
    base = (sigma_t / sigma_0) * x - math.expm1(hh) * m0
    pred = 0
    if diffs:
        rho_p = [0.5] if order == 2 else _solve([r[:-1] for r in rows[:-1]], rhs[:-1])
        pred = sum(d * r for d, r in zip(diffs, rho_p))
    x_t = base - b_h * pred
    if not correct:
        return x_t, None
    m_t = evaluate(x_t)
    rho_c = [0.5] if order == 1 else _solve(rows, rhs)
    corr = sum(d * r for d, r in zip(diffs, rho_c[:-1])) if diffs else 0
    return base - b_h * (corr + rho_c[-1] * (m_t - m0)), m_t


def _unipc(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback,
           variant: str, order: int = 3) -> torch.Tensor:
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    if len(sig) <= 1:
        return x
    if sig[-1] == 0:
        sig[-1] = min(_END, sig[-2] / 2)
    n = len(sig) - 1
    lam = [-math.log(s) for s in sig]
    models = [denoiser(x, sig[0])]
    lams = [lam[0]]
    for step in range(1, n + 1):
        step_order = min(order, step, n + 1 - step)
        correct = step < n
        s_t = sig[step]
        x, m_t = _update(x, models, lams, lam[step], s_t, sig[step - 1], step_order, variant,
                         lambda xt, s=s_t: denoiser(xt, s), correct)
        steps.done(step - 1, models[-1])
        if step < n:
            models = (models + [m_t])[-order:]
            lams = (lams + [lam[step]])[-order:]
    return x


def sample_uni_pc(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                  generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """UniPC with B(h) = h (bh1)."""
    return _unipc(denoiser, x, sigmas, callback, "bh1")


def sample_uni_pc_bh2(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                      generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """UniPC with B(h) = e^h - 1 (bh2)."""
    return _unipc(denoiser, x, sigmas, callback, "bh2")
