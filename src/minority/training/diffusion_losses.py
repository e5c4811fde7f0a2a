"""Losses of pixel-space DDPM training with learned variance (Nichol & Dhariwal 2021, "hybrid" loss).

All tensors are ``(B, C, H, W)`` unless stated; timesteps ``t`` are ``(B,)`` integer indices into the
scheduler's ``alphas_cumprod``. KL terms are in bits per dimension.
"""

from __future__ import annotations

import math

import torch


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise −log p(x) in nats of 8-bit data ``x`` in [-1, 1] under a Gaussian discretised into 256 bins."""
    centered = x - mean
    inv_std = torch.exp(-0.5 * logvar)
    cdf_plus = _std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
    return -log_probs


class PosteriorTerms:
    """Float64-derived coefficients of q(x_{t−1} | x_t, x_0) for a scheduler's ``alphas_cumprod`` ``(T,)``."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        ac = alphas_cumprod.double()
        prev = torch.cat([ac.new_ones(1), ac[:-1]])
        betas = 1 - ac / prev
        var = betas * (1 - prev) / (1 - ac)
        self.log_var_clipped = torch.log(torch.cat([var[1:2], var[1:]])).float()
        self.log_beta = torch.log(betas).float()
        self.coef_x0 = (betas * prev.sqrt() / (1 - ac)).float()
        self.coef_xt = ((1 - prev) * (1 - betas).sqrt() / (1 - ac)).float()
        self.sqrt_ac = ac.sqrt().float()
        self.sqrt_1mac = (1 - ac).sqrt().float()

    def _at(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return table.to(t.device)[t].view(-1, 1, 1, 1)

    def model_logvar(self, t: torch.Tensor, var_out: torch.Tensor) -> torch.Tensor:
        """Model log-variance ``(B, C, H, W)`` from the ``learned_range`` output ``var_out`` at timesteps ``t (B,)``."""
        frac = (var_out + 1) / 2
        return frac * self._at(self.log_beta, t) + (1 - frac) * self._at(self.log_var_clipped, t)

    def vlb_bits(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                 var_out: torch.Tensor) -> torch.Tensor:
        """Per-sample VLB term ``(B,)`` in bits/dim for ε-prediction ``eps`` and ``learned_range`` output ``var_out``.

        The model log-variance interpolates, with ``frac = (var_out + 1) / 2``, between the clipped posterior
        log-variance and log β_t, as diffusers' ``DDPMScheduler(variance_type="learned_range")`` does.
        At ``t = 0`` the term is the discretised decoder NLL, else the KL to the true posterior.
        """
        logvar = self.model_logvar(t, var_out)
        x0_hat = (xt - self._at(self.sqrt_1mac, t) * eps) / self._at(self.sqrt_ac, t)
        mean = self._at(self.coef_x0, t) * x0_hat + self._at(self.coef_xt, t) * xt
        true_mean = self._at(self.coef_x0, t) * x0 + self._at(self.coef_xt, t) * xt
        true_logvar = self._at(self.log_var_clipped, t).expand_as(xt)
        kl = normal_kl(true_mean, true_logvar, mean, logvar).flatten(1).mean(1) / math.log(2.0)
        nll = discretized_gaussian_nll(x0, mean, logvar).flatten(1).mean(1) / math.log(2.0)
        return torch.where(t == 0, nll, kl)
