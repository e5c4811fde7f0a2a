"""The likelihood confound control: is an arm's likelihood gain more than its images' extra detail?

Negative log-likelihood tracks image detail (Karczewski et al., ICML 2025), measured here as the PNG-compressed
size b (bits per pixel, :func:`minority.metrics.compression.png_bits_per_pixel`). A common slope β of NLL on b
is fitted within the arms (analysis of covariance: NLL ≈ α_arm + β·b, least squares on the per-arm centred
values); an arm's gain over the base arm, Δ = mean NLL − mean NLL_base, then splits into the part detail predicts,
β·(mean b − mean b_base), and the residual gain Δ − β·(mean b − mean b_base), with a normal 95% CI (Welch, on the
per-image NLL − β·b; β's own uncertainty is not propagated). The verdict:

* ``explained by detail alone``: Δ's CI excludes 0 but the residual's CI includes 0;
* ``not explained by detail alone``: the residual's CI excludes 0;
* ``no significant gain``: neither CI excludes 0 (nothing to explain).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

Z95 = 1.959963984540054


@dataclass(frozen=True)
class DetailControl:
    """One arm against the base arm (NLL in bits/dim, detail in PNG bits/pixel)."""

    arm: str
    nll: float
    png_bpp: float
    gain: float | None
    gain_ci: tuple[float, float] | None
    predicted_by_detail: float | None
    residual_gain: float | None
    residual_ci: tuple[float, float] | None
    spearman: float | None
    verdict: str
    slope: float = 0.0


def _diff_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, tuple[float, float]]:
    d = float(a.mean() - b.mean())
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if min(len(a), len(b)) > 1 else math.inf
    return d, (d - Z95 * se, d + Z95 * se)


def _excludes_zero(ci: tuple[float, float]) -> bool:
    return ci[0] > 0 or ci[1] < 0


def detail_control(per_arm: Mapping[str, tuple[Sequence[float], Sequence[float]]], base: str) -> list[DetailControl]:
    """Per arm (``{arm: (nll per image, png_bpp per image)}``, aligned per image), its gain over ``base``,
    the part image detail predicts and the residual, with the verdict of the module docstring."""
    data = {k: (np.asarray(n, np.float64), np.asarray(b, np.float64)) for k, (n, b) in per_arm.items()}
    data = {k: (n[ok], b[ok]) for k, (n, b) in data.items() if (ok := np.isfinite(n) & np.isfinite(b)).any()}
    if base not in data:
        return []
    # the common within-arm slope (analysis of covariance): arms may differ in level, not in how NLL tracks detail
    dn = np.concatenate([n - n.mean() for n, _ in data.values()])
    db = np.concatenate([b - b.mean() for _, b in data.values()])
    beta = float(dn @ db / (db @ db)) if db @ db > 0 else 0.0
    n0, b0 = data[base]
    r0 = n0 - beta * b0
    out = []
    for arm, (n, b) in data.items():
        rho = spearmanr(b, n)[0] if len(n) > 2 else float("nan")
        rho = float(rho) if np.isfinite(rho) else None
        if arm == base:
            out.append(DetailControl(arm, float(n.mean()), float(b.mean()), None, None, None, None, None, rho, "base", beta))
            continue
        gain, gain_ci = _diff_ci(n, n0)
        residual, residual_ci = _diff_ci(n - beta * b, r0)
        if _excludes_zero(residual_ci):
            verdict = "not explained by detail alone"
        elif _excludes_zero(gain_ci):
            verdict = "explained by detail alone"
        else:
            verdict = "no significant gain"
        out.append(DetailControl(arm, float(n.mean()), float(b.mean()), gain, gain_ci,
                                 float(beta * (b.mean() - b0.mean())), residual, residual_ci, rho, verdict, beta))
    return out


def detail_markdown(rows: list[DetailControl], base: str) -> list[str]:
    """The ``results.md`` section of :func:`detail_control`."""
    if not rows:
        return []

    def pm(v, ci) -> str:
        return "–" if v is None else f"{v:+.3g} ± {(ci[1] - ci[0]) / 2:.2g}"

    head = ("| method | NLL bits/dim | PNG bits/pixel | Spearman ρ | gain vs " + base + " | predicted by detail | "
            "residual gain | verdict |")
    lines = ["## Likelihood and image detail", "",
             "Low likelihood also tracks image detail (Karczewski et al., ICML 2025). A common within-method slope β "
             "of NLL on PNG bits/pixel (NLL ≈ α_method + β·detail); a method's gain over " + base + " splits into "
             f"what its extra detail predicts and the residual (95% CIs, Welch; β = {rows[0].slope:.3g}).", "",
             head, "|" + "---|" * 8]
    for r in rows:
        rho = "–" if r.spearman is None else f"{r.spearman:.2f}"
        pred = "–" if r.predicted_by_detail is None else f"{r.predicted_by_detail:+.3g}"
        lines.append(f"| {r.arm} | {r.nll:.4g} | {r.png_bpp:.4g} | {rho} | {pm(r.gain, r.gain_ci)} | {pred} | "
                     f"{pm(r.residual_gain, r.residual_ci)} | {r.verdict} |")
    return [*lines, ""]
