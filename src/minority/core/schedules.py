"""Sampling grids: explicit (t, t_next) timestep pairs taken from a diffusers scheduler.

The grid is the scheduler's own ``timesteps`` after ``set_timesteps(steps)`` (so ``leading`` spacing with
``steps_offset`` as SD, ``trailing`` as SDXL-Lightning, ``linspace``...), paired with the next entry;
the last step's ``t_next`` is ``-1``, which the denoiser maps to ᾱ = ``final_alpha_cumprod`` exactly as
diffusers' DDIM does.

``spacing="adm"`` instead keeps guided-diffusion's ``timestep_respacing`` steps (:func:`space_timesteps`, e.g. 250
of 1000 with its own rounding). The ancestral posterior between kept steps t > t_next uses
β = 1 − ᾱ_t/ᾱ_next — exactly guided-diffusion's respaced betas (:func:`respaced_betas`), so SGMS's
``guide_every`` and ``perturb`` act on the authors' respaced indices.
"""

from __future__ import annotations

from minority.errors import MinorityError

SPACINGS = ("scheduler", "adm")


def space_timesteps(num_timesteps: int, section_counts: int | str | list[int]) -> list[int]:
    """guided-diffusion's ``space_timesteps``: split [0, T) into equal sections (the first ``T % n`` one step
    longer) and take ``count`` steps of each, evenly strided with Python ``round`` (a count of 1 takes the
    section's first step). Returns the kept timesteps, ascending. ``section_counts``: an int, ``"250"`` or
    ``"10,15,20"``."""
    if isinstance(section_counts, str):
        section_counts = [int(x) for x in section_counts.split(",")]
    elif isinstance(section_counts, int):
        section_counts = [section_counts]
    n = len(section_counts)
    size_per, extra = num_timesteps // n, num_timesteps % n
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise MinorityError(f"cannot take {count} steps from a section of {size} timesteps: use fewer steps "
                                f"(at most {size} per section).")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):  # accumulated as guided-diffusion does (its float rounding at the halves)
            kept.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(kept))


def respaced_betas(alphas_cumprod, kept: list[int]) -> list[float]:
    """guided-diffusion's respaced betas: β_k = 1 − ᾱ_{t_k}/ᾱ_{t_{k−1}} over the kept timesteps t_0 < t_1 < …
    (ᾱ before the first kept step = 1)."""
    out, last = [], 1.0
    for t in kept:
        a = float(alphas_cumprod[int(t)])
        out.append(1.0 - a / last)
        last = a
    return out


def timestep_pairs(scheduler, steps: int, spacing: str = "scheduler") -> list[tuple[int, int]]:
    """``[(t_0, t_1), (t_1, t_2), ..., (t_{T-1}, -1)]`` for ``steps`` sampling steps (t_0 > t_1 > ...):
    the scheduler's own ``set_timesteps`` grid, or with ``spacing="adm"`` guided-diffusion's respacing."""
    if spacing not in SPACINGS:
        raise MinorityError(f"spacing must be one of {', '.join(SPACINGS)} (got {spacing!r}).")
    if int(steps) < 1:
        raise MinorityError(f"steps must be >= 1 (got {steps}).")
    n_train = int(scheduler.config.num_train_timesteps)
    if steps > n_train:
        raise MinorityError(f"steps={steps} exceeds the model's {n_train} training timesteps: use at most {n_train}.")
    if spacing == "adm":
        ts = space_timesteps(n_train, int(steps))[::-1]
        return list(zip(ts, ts[1:] + [-1]))
    grid = type(scheduler).from_config(scheduler.config)  # a copy: the model's scheduler is never mutated
    grid.set_timesteps(int(steps))
    ts = [int(t) for t in grid.timesteps]
    return list(zip(ts, ts[1:] + [-1]))


def annealed_perturb_timestep(t_next: int, num_train_timesteps: int) -> int:
    """MinorityPrompt's annealed re-noising timestep s = clamp((T_train − 1) − t_next, 1, T_train − 1),
    with t_next = 0 after the last step — the paper's s = T − t on the 0-based timestep grid.

    On SDXL-Lightning's 4-step trailing grid (999, 749, 499, 249) this gives s = 250, 500, 750, 999, the
    values of the authors' code (issue 3). SPEC §3.1 writes T_train − t_next, which would give 251, 501, 751.
    """
    t_next = max(int(t_next), 0)
    return min(max(num_train_timesteps - 1 - t_next, 1), num_train_timesteps - 1)
