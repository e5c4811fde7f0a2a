"""Sampling grids: explicit (t, t_next) timestep pairs taken from a diffusers scheduler.

The grid is the scheduler's own ``timesteps`` after ``set_timesteps(steps)`` (so ``leading`` spacing with
``steps_offset`` as SD, ``trailing`` as SDXL-Lightning, ``linspace``...), paired with the next entry;
the last step's ``t_next`` is ``-1``, which the denoiser maps to ᾱ = ``final_alpha_cumprod`` exactly as
diffusers' DDIM does.
"""

from __future__ import annotations

from minority.errors import MinorityError


def timestep_pairs(scheduler, steps: int) -> list[tuple[int, int]]:
    """``[(t_0, t_1), (t_1, t_2), ..., (t_{T-1}, -1)]`` for ``steps`` sampling steps (t_0 > t_1 > ...)."""
    if int(steps) < 1:
        raise MinorityError(f"steps must be >= 1 (got {steps}).")
    n_train = int(scheduler.config.num_train_timesteps)
    if steps > n_train:
        raise MinorityError(f"steps={steps} exceeds the model's {n_train} training timesteps: use at most {n_train}.")
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
