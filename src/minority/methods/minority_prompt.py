"""MinorityPrompt: online optimisation of learnable prompt tokens (MP Alg. 1-2, Eq. 4, 7-9; SPEC §3.1).

A placeholder S (``num_tokens`` learnable embeddings v per image) is inserted into each prompt at
``token_position``. At every optimised sampling step the token is refined with a fresh Adam for
``opt_steps`` iterations to *maximise* an objective J(v) (pluggable), and the sampling step then uses
C_{v*}; the value of v carries over to the next optimised step. Only v is ever updated: the text encoder,
UNet and VAE stay frozen and no weight gradient is computed.

Objectives:

* :class:`MinorityObjective` — J̃_C = ‖ẑ0¹ − sg(ẑ0²)‖² + λ‖sg(ẑ0¹) − ẑ0²‖² (MP Eq. 8) with
  ẑ0¹ = ẑ0(z_t, C_v), z_s = √ᾱ_s ẑ0¹ + √(1−ᾱ_s) ε, ẑ0² = ẑ0(z_s, C); plus the MP Tab. 2 ablation switches
  ``tweedie_cfg``, ``stop_grad_second``, ``cv_in_second`` (all three = the naive Eq. 6).
* :class:`DiversityObjective` — J̄ = Σ_i Σ_{j≠i} ‖ẑ0(z_t^i, C_{v_i}) − ẑ0(z_t^j, C_{v_j})‖² over the images of
  one prompt (MP Eq. 9).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from minority.core import flow_text, tokens
from minority.core.conditioning import Conditioning
from minority.core.context import RunContext
from minority.core.denoiser import Denoiser
from minority.core.guards import ActiveSamples
from minority.core.kernel import reconstruction, renoising_noise
from minority.core.sampling import Hook, StepContext, cfg_eps
from minority.core.text import TokenOverride
from minority.errors import MinorityError
from minority.methods.base import Method, hyperparameter

# Per-family optimisation defaults (SPEC §3.1; SD 1.x/2.x/SDXL values are this project's choice).
FAMILY_OPT_DEFAULTS = {"sd": {"opt_every": 5, "init_word": "cool"}, "sdxl": {"opt_every": 5, "init_word": "cool"},
                       "sdxl-lightning": {"opt_every": 1, "init_word": "handsome"},
                       "flux-schnell": {"opt_every": 1, "init_word": "cool"}}


@dataclass
class ObjectiveInputs:
    """What an objective sees at one optimisation iteration (batch of B samples): the frozen ``denoiser``, z_t
    ``z`` ``(B, C, h, w)`` (detached), timestep ``t`` and re-noising timestep ``s``, C_v ``cond_v``
    (differentiable w.r.t. v), the prompt's C ``cond`` and the unconditional branch ``uncond``, the CFG scale
    ``guidance``, per-sample ``generators`` and prompt ``group_ids``."""

    denoiser: Denoiser
    z: torch.Tensor
    t: int
    s: int
    cond_v: Conditioning
    cond: Conditioning
    uncond: Conditioning | None
    guidance: float
    generators: list
    group_ids: list[int]
    uncond_cache: dict = field(default_factory=dict)  # shared across iterations of one timestep
    _cache: dict = field(default_factory=dict)  # this iteration only

    def x0(self, z: torch.Tensor, t: int, cond: Conditioning, cfg: bool = False) -> torch.Tensor:
        """Tweedie estimate ẑ0(z, cond) (CFG-guided with ``cfg``); differentiable."""
        den = self.denoiser
        if not cfg or self.uncond is None or self.guidance == 1.0:
            return den(z, t, cond).x0
        if z is self.z:  # ε(z_t, ∅) does not depend on v: evaluate it once per timestep
            if t not in self.uncond_cache:
                with torch.no_grad():
                    self.uncond_cache[t] = den(z, t, self.uncond)
            pu, pc = self.uncond_cache[t], den(z, t, cond)
        else:  # CFG batch at z_s, which depends on v: one call with gradient
            pc, pu = den.both(z, t, cond, self.uncond)
        return den.guided_x0(z, t, cfg_eps(pc, pu, self.guidance), pc, pu, self.guidance)

    def first_x0(self, cfg: bool = False) -> torch.Tensor:
        """ẑ0¹ = ẑ0(z_t, C_v) (cached: shared by combined objectives)."""
        if ("first", cfg) not in self._cache:
            self._cache[("first", cfg)] = self.x0(self.z, self.t, self.cond_v, cfg=cfg)
        return self._cache[("first", cfg)]


Objective = Callable[[ObjectiveInputs], torch.Tensor]  # -> J per sample (B,), to be maximised


def _sq(x: torch.Tensor) -> torch.Tensor:  # ‖x‖² per sample, (B,)
    return x.pow(2).flatten(1).sum(1)


@dataclass
class MinorityObjective:
    """J̃_C of MP Eq. 8 (and its Tab. 2 ablations); returns J per sample ``(B,)``."""

    sg_lambda: float = 1.0
    tweedie_cfg: bool = False
    stop_grad_second: bool = False
    cv_in_second: bool = False

    def __call__(self, o: ObjectiveInputs) -> torch.Tensor:
        cfg = self.tweedie_cfg
        x1 = o.first_x0(cfg=cfg)  # ẑ0¹ = ẑ0(z_t, C_v)
        eps = renoising_noise(o.generators, x1)
        c2 = o.cond_v if self.cv_in_second else o.cond
        a_s = o.denoiser.alpha(o.s)
        if self.stop_grad_second:
            with torch.no_grad():
                x2 = reconstruction(x1.detach(), o.s, a_s, eps, lambda z, s: o.x0(z, s, c2.detach(), cfg=cfg))
            return _sq(x1 - x2)
        x2 = reconstruction(x1, o.s, a_s, eps, lambda z, s: o.x0(z, s, c2, cfg=cfg))  # ẑ0² = ẑ0(z_s, C), MP Eq. 4
        return _sq(x1 - x2.detach()) + self.sg_lambda * _sq(x1.detach() - x2)  # MP Eq. 8


@dataclass
class DiversityObjective:
    """J̄ of MP Eq. 9: per sample i, Σ_{j≠i} ‖ẑ0^i − ẑ0^j‖² over the samples of the same prompt."""

    def __call__(self, o: ObjectiveInputs) -> torch.Tensor:
        x = o.first_x0().flatten(1)
        groups = torch.tensor(o.group_ids, device=x.device)
        same = (groups[:, None] == groups[None, :]).to(x.dtype)
        d2 = (x[:, None, :] - x[None, :, :]).pow(2).sum(-1)  # (B, B)
        return (d2 * same).sum(1)


@dataclass
class WeightedSum:
    """Σ_k w_k J_k of several objectives (e.g. diversity + minority)."""

    terms: list[tuple[float, Objective]]

    def __call__(self, o: ObjectiveInputs) -> torch.Tensor:
        return sum(w * f(o) for w, f in self.terms if w != 0)


class PromptOptimizer(Hook):
    """Per-step hook of MP Alg. 1: optimise the placeholder embeddings, then condition the step on C_{v*}.

    Args:
        method: the resolved :class:`MinorityPrompt` (its fields are the optimisation's hyperparameters).
        run: the batch (prompt encoder, prompts, seeds, prompt groups, conditioning C and ∅, generators).
        objective: J(inputs) -> (B,) to maximise.
        init_vectors: initial v per encoder, each ``(B, num_tokens, D_k)`` (default: from ``method.init``).
    """

    def __init__(self, method: MinorityPrompt, run: RunContext, objective: Objective,
                 init_vectors: list[torch.Tensor] | None = None):
        self.m, self.run, self.objective = method, run, objective
        enc, n = run.prompt_encoder, method.num_tokens
        self.ids, self.markers, pairs, self.keys = flow_text.token_layout(enc, run.prompts, method.token_encoders, n,
                                                                          method.token_position)
        if init_vectors is None:
            init_vectors = tokens.initial_vectors(enc, method.init, method.init_word, n, len(run.prompts), run.generators, pairs)
        self.v = [v.detach().clone() for v in init_vectors]
        self.placeholders = tokens.placeholder_strings(method.placeholder, run.seeds, len(run.prompts))
        self.active = ActiveSamples(len(run.prompts), run.seeds)
        self.last_cond: Conditioning | None = None
        self.backward_passes = 0  # one per optimisation iteration (through both UNet forwards)

    def encode_v(self, vectors: list[torch.Tensor]) -> Conditioning:
        """C_v for the given token embeddings (differentiable w.r.t. ``vectors``)."""
        it = iter(vectors)  # one vector per encoder with a marker, in encode_ids order
        overrides = [None if m is None else TokenOverride(m, next(it)) for m in self.markers]
        c = self.run.prompt_encoder.encode_ids(self.ids, overrides)
        return c.replace(time_ids=self.run.cond.time_ids, guidance=self.run.cond.guidance)

    def optimised_at(self, index: int) -> bool:
        return index % self.m.opt_every == 0 and index < self.m.opt_window * self.run.steps

    def perturb_timestep(self, ctx: StepContext) -> int:
        den = ctx.denoiser  # s: annealed (MP §3.3; flows σ_s = 1 − σ_next) or a fixed fraction p of the schedule
        return den.annealed_level(ctx.t_next) if self.m.perturb == "annealed" else den.level(self.m.perturb)

    def before_step(self, ctx: StepContext) -> None:
        if self.optimised_at(ctx.index):  # MP Alg. 1: optimise v at every N-th step, then sample with C_{v*}
            if self.m.opt_steps > 0:
                self._optimise(ctx)
            with torch.no_grad():
                self.last_cond = self.encode_v(self.v)
            ctx.cond = self.last_cond
        elif not self.m.base_prompt_between and self.last_cond is not None:
            ctx.cond = self.last_cond

    def _optimise(self, ctx: StepContext) -> None:
        """MP Alg. 2: K Adam steps (fresh state) on v maximising J at (z_t, t, s)."""
        z, s, B = ctx.z.detach(), self.perturb_timestep(ctx), ctx.z.shape[0]
        params = [v.detach().clone().requires_grad_(True) for v in self.v]
        opt = torch.optim.Adam(params, lr=self.m.lr)
        history: list[list[float]] = [[] for _ in range(B)]
        uncond_cache: dict = {}
        with torch.enable_grad():
            for k in range(self.m.opt_steps):
                inputs = ObjectiveInputs(ctx.denoiser, z, ctx.t, s, self.encode_v(params), self.run.cond,
                                         self.run.uncond, ctx.guidance, ctx.generators, self.run.group_ids,
                                         uncond_cache=uncond_cache)
                J = self.objective(inputs)  # (B,)
                opt.zero_grad(set_to_none=True)
                (-(J * self.active.mask(z.device).to(J.dtype)).sum()).backward()  # ascend J
                self.backward_passes += 1
                self.active.observe(J, params, ctx.index, k)
                for b in range(B):
                    history[b].append(float(J[b].detach()))
                self.active.step(opt, params)
        self.v = [p.detach() for p in params]
        ctx.record.update(J=history, t=[ctx.t] * B, s=[s] * B)

    def results(self) -> list[dict]:
        """Per image: ``placeholder`` and ``token_embeds`` (textual-inversion layout, :func:`token_embeds`)."""
        keys = None if None in self.keys else self.keys
        return [{"placeholder": n, "token_embeds": tokens.token_embeds(n, [v[b] for v in self.v], keys)}
                for b, n in enumerate(self.placeholders)]


@dataclass(frozen=True)
class MinorityPrompt(Method):
    """MinorityPrompt's hyperparameters (SPEC §2) and its hook (:class:`PromptOptimizer` with J̃_C)."""

    name = "minority-prompt"
    summary = "MinorityPrompt: optimise a learnable prompt token to maximise the minority objective (MP Eq. 8)"

    opt_steps: int = hyperparameter(3, "K: Adam iterations per optimised timestep (0 = no optimisation)", low=0)
    lr: float = hyperparameter(0.01, "Adam learning rate (fresh Adam state at each optimised timestep)",
                               low=0.0, low_open=True)
    opt_every: int | None = hyperparameter(None, "N: optimise at step i when i % N == 0 (default: SD/SDXL 5, "
                                           "Lightning 1)", low=1)
    opt_window: float = hyperparameter(1.0, "fraction of the trajectory (from the start) in which optimisation is "
                                       "allowed", low=0.0, high=1.0, low_open=True)
    sg_lambda: float = hyperparameter(1.0, "λ: weight of the second stop-gradient term (MP Eq. 8)", low=0.0)
    perturb: float | str = hyperparameter("annealed", "s: 'annealed' (s = T − t_next) or a fraction in (0, 1) of "
                                          "T_train", low=0.0, high=1.0, low_open=True, high_open=True,
                                          keywords=("annealed",))
    token_position: str = hyperparameter("end", "where the placeholder goes in the prompt", choices=("end", "start"))
    num_tokens: int = hyperparameter(1, "learnable tokens per image", low=1)
    init: str = hyperparameter("word", "token initialisation: embedding of --init-word, vocabulary mean, or random",
                               choices=("word", "mean", "random"))
    init_word: str | None = hyperparameter(None, "one-token word whose embedding initialises v (default: SD/SDXL "
                                           "'cool', Lightning 'handsome')")
    placeholder: str = hyperparameter("<minority>", "placeholder (made unique per image) in the saved embeddings")
    base_prompt_between: bool = hyperparameter(True, "use the original prompt C on non-optimised steps (MP §3.3)")
    tweedie_cfg: bool = hyperparameter(False, "ablation (MP Tab. 2): CFG predictions in both Tweedie estimates")
    stop_grad_second: bool = hyperparameter(False, "ablation (MP Tab. 2): no gradient through ẑ0² (drop the λ term)")
    cv_in_second: bool = hyperparameter(False, "ablation (MP Tab. 2): feed C_v instead of C to the second prediction")
    solver: str = hyperparameter("ddim", "sampling solver the optimised token drives", choices=("ddim", "cfgpp"))
    gradient_checkpointing: bool = hyperparameter(False, "recompute activations in the backward pass (less memory)")
    token_encoders: str = hyperparameter("clip", "SD3/FLUX: encoders carrying the token: clip, t5 or both",
                                         choices=("clip", "t5", "both"))

    def resolved(self, family: str) -> MinorityPrompt:
        """``opt_every`` and ``init_word`` filled in from the family's defaults."""
        d = FAMILY_OPT_DEFAULTS.get(family, FAMILY_OPT_DEFAULTS["sd"])
        return self.replace(opt_every=self.opt_every or d["opt_every"], init_word=self.init_word or d["init_word"])

    def check(self, run: Any) -> None:
        if self.solver == "cfgpp" and not 0 <= run.guidance <= 1:
            raise MinorityError(f"solver cfgpp takes --guidance λ in [0, 1] (got {run.guidance}).")
        enc = run.prompt_encoder
        if enc is None:
            raise MinorityError(f"{self.name} needs a text-to-image model (a prompt to put the token into).")
        flow_text.check_token_encoders(enc, self.token_encoders, self.init == "word" and self.resolved(run.family).init_word)
        for tok in enc.tokenizers:
            vocab = tok.get_vocab()
            for cand in (self.placeholder, self.placeholder.lower()):
                if cand in vocab or cand + "</w>" in vocab:
                    raise MinorityError(f"placeholder {self.placeholder!r} already exists in the vocabulary: "
                                        "choose a string that is not a word, e.g. '<minority>'.")
            if self.init == "word":
                tokens.word_token_id(tok, self.resolved(run.family).init_word)
            unique = list(dict.fromkeys(run.prompts))  # each prompt tokenised once per run
            tokens.insert_placeholders(tok, unique, self.num_tokens, self.token_position, len(tok) + 1000)

    def objective(self) -> Objective:
        return MinorityObjective(self.sg_lambda, self.tweedie_cfg, self.stop_grad_second, self.cv_in_second)

    def hooks(self, run: Any) -> list[Hook]:
        if self.gradient_checkpointing and hasattr(run.unet, "enable_gradient_checkpointing"):
            run.unet.enable_gradient_checkpointing()
        return [PromptOptimizer(self.resolved(run.family), run, self.objective())]


@dataclass(frozen=True)
class DiversePrompt(MinorityPrompt):
    """MinorityPrompt's optimiser with the diversity objective J̄ (MP Eq. 9), optionally plus J̃_C."""

    name = "diverse-prompt"
    summary = "MinorityPrompt's diversity objective over the images of one prompt (MP Eq. 9)"
    whole_prompt_batches = True

    diversity_weight: float = hyperparameter(1.0, "weight of the diversity objective J̄ (MP Eq. 9)")
    minority_weight: float = hyperparameter(0.0, "weight of the minority objective J̃ added to J̄ (0 = diversity alone)")

    def check(self, run: Any) -> None:
        super().check(run)
        if min(Counter(run.group_ids).values(), default=0) < 2:
            raise MinorityError("diverse-prompt needs at least 2 images per prompt in a batch: use --images-per-prompt "
                                "2 or more (or several seeds).")

    def objective(self) -> Objective:
        terms = [(self.diversity_weight, DiversityObjective()), (self.minority_weight, super().objective())]
        return WeightedSum([t for t in terms if t[0] != 0])
