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

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from minority.core.conditioning import Conditioning
from minority.core.denoiser import Denoiser
from minority.core.rng import randn_per_sample
from minority.core.sampling import Hook, StepContext, cfg_eps, tweedie
from minority.core.schedules import annealed_perturb_timestep
from minority.core.text import PromptEncoder, TokenOverride
from minority.errors import MinorityError
from minority.methods.base import Method, MethodConfig, MethodContext, param, register_method

log = logging.getLogger("minority")

# Per-family optimisation defaults (SPEC §3.1; SD 1.x/2.x/SDXL values are this project's choice).
FAMILY_OPT_DEFAULTS = {
    "sd": {"opt_every": 5, "init_word": "cool"},
    "sdxl": {"opt_every": 5, "init_word": "cool"},
    "sdxl-lightning": {"opt_every": 1, "init_word": "handsome"},
}


# --------------------------------------------------------------------------------------------------
# Placeholder tokens


def insert_placeholders(tokenizer, prompts: list[str], num_tokens: int, position: str, marker: int) -> torch.Tensor:
    """Token ids ``(B, model_max_length)`` of ``prompts`` with ``num_tokens`` placeholder ids inserted.

    The placeholder ids are ``marker, marker+1, ...`` (outside the vocabulary; the text encoder's lookup is
    spliced, see :class:`minority.core.text.TokenOverride`). ``position="end"`` puts them right before the
    end-of-text token, ``"start"`` right after the start token — exactly where the tokenizer would put an
    added token written at the end / start of the prompt.
    """
    L = tokenizer.model_max_length
    rows = []
    for p in prompts:
        ids = tokenizer(p, truncation=False).input_ids  # [bos, ..., eos]
        body = ids[1:-1]
        room = L - 2 - num_tokens
        if len(body) > room:
            raise MinorityError(
                f"Prompt too long for the {num_tokens} learnable token(s): remove {len(body) - room} token(s) "
                f"(CLIP takes {L} including start/end and placeholder tokens): {p[:60]!r}"
            )
        slots = list(range(marker, marker + num_tokens))
        body = body + slots if position == "end" else slots + body
        row = [ids[0], *body, ids[-1]]
        rows.append(row + [tokenizer.pad_token_id] * (L - len(row)))
    return torch.tensor(rows, dtype=torch.long)


def placeholder_strings(base: str, seeds: list, batch: int) -> list[str]:
    """Unique placeholder string per image, e.g. ``<minority-42>`` (batch index added if seeds repeat)."""
    seeds = [s if s is not None else b for b, s in enumerate(seeds)] if seeds else list(range(batch))
    dup = len(set(seeds)) != len(seeds)
    stem = base[:-1] if base.endswith(">") else base
    close = ">" if base.endswith(">") else ""
    return [f"{stem}-{s}{f'-{b}' if dup else ''}{close}" for b, s in enumerate(seeds)]


def word_token_id(tokenizer, word: str) -> int:
    """The id of ``word`` if it is a single BPE token, else a clear error listing its tokens."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        toks = tokenizer.convert_ids_to_tokens(ids)
        raise MinorityError(f"init_word {word!r} is not a single token (it is {toks}): choose a one-token word, e.g. 'cool'.")
    return ids[0]


# --------------------------------------------------------------------------------------------------
# Objectives


@dataclass
class ObjectiveInputs:
    """What an objective sees at one optimisation iteration (batch of B samples).

    Attributes:
        denoiser: model adapter (frozen weights).
        z: current latent z_t ``(B, C, h, w)`` (detached).
        t, s: current timestep and the re-noising timestep s (annealed or fixed ``perturb``).
        cond_v: C_v, text conditioning carrying the learnable tokens (differentiable w.r.t. v).
        cond: the original prompt conditioning C; ``uncond``: the unconditional branch (or None).
        guidance: CFG scale w (used by ``tweedie_cfg``).
        generators: per-sample generators (re-noising draws).
        group_ids: per-sample prompt index (for the diversity objective).
    """

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
            pu = self.uncond_cache[t]
            pc = den(z, t, cond)
        else:  # CFG batch at z_s, which depends on v: one call with gradient
            out = den.raw(torch.cat([z, z]), t, Conditioning.cat([self.uncond, cond]))
            ou, oc = out.chunk(2)
            pu, pc = den.convert(z, t, ou), den.convert(z, t, oc)
        return tweedie(z, cfg_eps(pc, pu, self.guidance), den.alpha(t))

    def first_x0(self, cfg: bool = False) -> torch.Tensor:
        """ẑ0¹ = ẑ0(z_t, C_v) (cached: shared by combined objectives)."""
        key = ("first", cfg)
        if key not in self._cache:
            self._cache[key] = self.x0(self.z, self.t, self.cond_v, cfg=cfg)
        return self._cache[key]


Objective = Callable[[ObjectiveInputs], torch.Tensor]  # -> J per sample (B,), to be maximised


def _sq(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).flatten(1).sum(1)


@dataclass
class MinorityObjective:
    """J̃_C of MP Eq. 8 (and its Tab. 2 ablations); returns J per sample ``(B,)``."""

    sg_lambda: float = 1.0
    tweedie_cfg: bool = False
    stop_grad_second: bool = False
    cv_in_second: bool = False

    def __call__(self, o: ObjectiveInputs) -> torch.Tensor:
        x1 = o.first_x0(cfg=self.tweedie_cfg)
        a_s = o.denoiser.alpha(o.s)
        eps = randn_per_sample(o.generators, x1.shape[1:], device=x1.device).to(x1.dtype)
        zs = a_s**0.5 * x1 + (1.0 - a_s) ** 0.5 * eps
        c2 = o.cond_v if self.cv_in_second else o.cond
        if self.stop_grad_second:
            with torch.no_grad():
                x2 = o.x0(zs.detach(), o.s, c2.detach(), cfg=self.tweedie_cfg)
            return _sq(x1 - x2)
        x2 = o.x0(zs, o.s, c2, cfg=self.tweedie_cfg)
        return _sq(x1 - x2.detach()) + self.sg_lambda * _sq(x1.detach() - x2)


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


# --------------------------------------------------------------------------------------------------
# The optimiser hook


class PromptOptimizer(Hook):
    """Per-step hook of MP Alg. 1: optimise the placeholder embeddings, then condition the step on C_{v*}.

    Args:
        encoder: the prompt encoder (frozen text encoders).
        prompts, seeds, group_ids: per sample.
        cond, uncond: the original conditioning C and the unconditional branch.
        objective: J(inputs) -> (B,) to maximise.
        init_vectors: initial v per encoder, each ``(B, num_tokens, D_k)``.
        steps: number of sampling steps T (for ``opt_window``).
        opt_steps, lr, opt_every, opt_window, perturb, base_prompt_between, token_position, num_tokens: SPEC §2.
        placeholders: the per-image placeholder strings (for the saved embeddings).
    """

    def __init__(self, encoder: PromptEncoder, prompts: list[str], seeds: list, group_ids: list[int],
                 cond: Conditioning, uncond: Conditioning | None, objective: Objective,
                 init_vectors: list[torch.Tensor], steps: int, opt_steps: int, lr: float, opt_every: int,
                 opt_window: float, perturb, base_prompt_between: bool, token_position: str, num_tokens: int,
                 placeholders: list[str]):
        self.encoder, self.seeds, self.group_ids = encoder, seeds, group_ids
        self.cond, self.uncond, self.objective = cond, uncond, objective
        self.steps, self.opt_steps, self.lr, self.opt_every = steps, opt_steps, lr, opt_every
        self.opt_window, self.perturb, self.base_prompt_between = opt_window, perturb, base_prompt_between
        self.placeholders, self.num_tokens = placeholders, num_tokens
        self.ids, self.markers = [], []
        for tok in encoder.tokenizers:
            marker = len(tok) + 1000  # outside any vocabulary
            self.ids.append(insert_placeholders(tok, prompts, num_tokens, token_position, marker))
            self.markers.append(torch.arange(marker, marker + num_tokens).expand(len(prompts), -1))
        self.v = [v.detach().clone() for v in init_vectors]
        self.stopped = [False] * len(prompts)
        self.last_cond: Conditioning | None = None
        self.backward_passes = 0  # one per optimisation iteration (through both UNet forwards)

    def encode_v(self, vectors: list[torch.Tensor]) -> Conditioning:
        """C_v for the given token embeddings (differentiable w.r.t. ``vectors``)."""
        overrides = [TokenOverride(m, v) for m, v in zip(self.markers, vectors)]
        c = self.encoder.encode_ids(self.ids, overrides)
        c.time_ids = self.cond.time_ids
        return c

    def optimised_at(self, index: int) -> bool:
        return index % self.opt_every == 0 and index < self.opt_window * self.steps

    def perturb_timestep(self, ctx: StepContext) -> int:
        T = ctx.denoiser.num_train_timesteps
        if self.perturb == "annealed":
            return annealed_perturb_timestep(ctx.t_next, T)
        return min(max(round(float(self.perturb) * T), 1), T - 1)

    def before_step(self, ctx: StepContext) -> None:
        if self.optimised_at(ctx.index):
            if self.opt_steps > 0:
                self._optimise(ctx)
            with torch.no_grad():
                self.last_cond = self.encode_v(self.v)
            ctx.cond = self.last_cond
        elif not self.base_prompt_between and self.last_cond is not None:
            ctx.cond = self.last_cond

    def _optimise(self, ctx: StepContext) -> None:
        z = ctx.z.detach()
        s = self.perturb_timestep(ctx)
        params = [v.detach().clone().requires_grad_(True) for v in self.v]
        opt = torch.optim.Adam(params, lr=self.lr)  # fresh Adam state at each optimised timestep
        B = z.shape[0]
        active = torch.tensor([not x for x in self.stopped], device=z.device)
        history: list[list[float]] = [[] for _ in range(B)]
        uncond_cache: dict = {}
        with torch.enable_grad():
            for k in range(self.opt_steps):
                inputs = ObjectiveInputs(ctx.denoiser, z, ctx.t, s, self.encode_v(params), self.cond, self.uncond,
                                         ctx.guidance, ctx.generators, self.group_ids, uncond_cache=uncond_cache)
                J = self.objective(inputs)  # (B,)
                opt.zero_grad(set_to_none=True)
                (-(J * active.to(J.dtype)).sum()).backward()
                self.backward_passes += 1
                finite = torch.isfinite(J.detach())
                for p in params:
                    finite &= torch.isfinite(p.grad).flatten(1).all(1)
                for b in range(B):
                    history[b].append(float(J[b].detach()))
                    if bool(active[b]) and not bool(finite[b]):
                        log.warning("Non-finite objective or gradient for image %d (seed %s) at step %d, iteration %d: "
                                    "its token optimisation stops; the last finite token is kept.",
                                    b, self.seeds[b] if self.seeds else b, ctx.index, k)
                        self.stopped[b] = True
                active = torch.tensor([not x for x in self.stopped], device=z.device)
                before = [p.detach().clone() for p in params]
                for p in params:
                    p.grad = torch.nan_to_num(p.grad) * active.view(-1, *[1] * (p.ndim - 1)).to(p.dtype)
                opt.step()
                with torch.no_grad():
                    for p, p0 in zip(params, before):
                        keep = active.view(-1, *[1] * (p.ndim - 1))
                        p.copy_(torch.where(keep, p, p0))
        self.v = [p.detach() for p in params]
        ctx.record["J"] = history
        ctx.record["t"] = [ctx.t] * B
        ctx.record["s"] = [s] * B

    def results(self) -> list[dict]:
        """Per image: the placeholder string and the optimised embeddings per encoder ``(num_tokens, D)``,
        keyed as textual-inversion files expect (SD: the placeholder; SDXL: ``clip_l`` / ``clip_g``)."""
        out = []
        for b, name in enumerate(self.placeholders):
            if len(self.v) == 1:
                emb = {name: self.v[0][b].detach().cpu().float().contiguous()}
            else:
                emb = {"clip_l": self.v[0][b].detach().cpu().float().contiguous(),
                       "clip_g": self.v[1][b].detach().cpu().float().contiguous()}
            out.append({"placeholder": name, "token_embeds": emb})
        return out


# --------------------------------------------------------------------------------------------------
# Method registration


@dataclass(frozen=True)
class MinorityPromptConfig(MethodConfig):
    opt_steps: int = param(3, "K: Adam iterations per optimised timestep (0 = no optimisation)")
    lr: float = param(0.01, "Adam learning rate (fresh Adam state at each optimised timestep)")
    opt_every: int | None = param(None, "N: optimise at step i when i % N == 0 (default: SD/SDXL 5, Lightning 1)")
    opt_window: float = param(1.0, "fraction of the trajectory (from the start) in which optimisation is allowed")
    sg_lambda: float = param(1.0, "λ: weight of the second stop-gradient term (MP Eq. 8)")
    perturb: object = param("annealed", "s: 'annealed' (s = T − t_next) or a fraction in (0, 1) of T_train "
                            "(default: minority-prompt/diverse-prompt: annealed, sgms: 0.8)")
    token_position: str = param("end", "where the placeholder goes in the prompt", choices=("end", "start"))
    num_tokens: int = param(1, "learnable tokens per image")
    init: str = param("word", "token initialisation: embedding of --init-word, vocabulary mean, or random",
                      choices=("word", "mean", "random"))
    init_word: str | None = param(None, "one-token word whose embedding initialises v (default: SD/SDXL 'cool', "
                                  "Lightning 'handsome')")
    placeholder: str = param("<minority>", "placeholder string (made unique per image) used in the saved embeddings")
    base_prompt_between: bool = param(True, "use the original prompt C on non-optimised steps (MP §3.3)")
    tweedie_cfg: bool = param(False, "ablation (MP Tab. 2): CFG predictions in both Tweedie estimates")
    stop_grad_second: bool = param(False, "ablation (MP Tab. 2): no gradient through ẑ0² (drop the λ term)")
    cv_in_second: bool = param(False, "ablation (MP Tab. 2): feed C_v instead of C to the second prediction")
    solver: str = param("ddim", "sampling solver the optimised token drives", choices=("ddim", "cfgpp"))
    gradient_checkpointing: bool = param(False, "recompute UNet activations in the backward pass (SDXL-size memory)")

    def validate(self, context: MethodContext) -> None:
        if self.opt_steps < 0:
            raise MinorityError(f"opt_steps must be >= 0 (got {self.opt_steps}).")
        if not self.lr > 0:
            raise MinorityError(f"lr must be > 0 (got {self.lr}).")
        if self.opt_every is not None and self.opt_every < 1:
            raise MinorityError(f"opt_every must be >= 1 (got {self.opt_every}).")
        if not 0 < self.opt_window <= 1:
            raise MinorityError(f"opt_window must be in (0, 1] (got {self.opt_window}).")
        if self.sg_lambda < 0:
            raise MinorityError(f"sg_lambda must be >= 0 (got {self.sg_lambda}).")
        if self.perturb != "annealed" and (isinstance(self.perturb, str) or not 0 < float(self.perturb) < 1):
            raise MinorityError(f"perturb must be 'annealed' or a fraction in (0, 1) (got {self.perturb!r}).")
        if self.num_tokens < 1:
            raise MinorityError(f"num_tokens must be >= 1 (got {self.num_tokens}).")
        if self.solver == "cfgpp" and not 0 <= context.guidance <= 1:
            raise MinorityError(f"solver cfgpp takes --guidance λ in [0, 1] (got {context.guidance}).")
        enc = context.prompt_encoder
        if enc is None:
            raise MinorityError("minority-prompt needs a text-to-image model (a prompt to put the token into).")
        for tok in enc.tokenizers:
            vocab = tok.get_vocab()
            for cand in (self.placeholder, self.placeholder.lower()):
                if cand in vocab or cand + "</w>" in vocab:
                    raise MinorityError(f"placeholder {self.placeholder!r} already exists in the vocabulary: "
                                        "choose a string that is not a word, e.g. '<minority>'.")
            if self.init == "word":
                word_token_id(tok, self.resolved(context.components.family)["init_word"])
            insert_placeholders(tok, context.prompts, self.num_tokens, self.token_position, len(tok) + 1000)

    def resolved(self, family: str) -> dict:
        """Family defaults filled in for ``opt_every`` and ``init_word``."""
        d = FAMILY_OPT_DEFAULTS.get(family, FAMILY_OPT_DEFAULTS["sd"])
        return {"opt_every": self.opt_every or d["opt_every"], "init_word": self.init_word or d["init_word"]}


@dataclass(frozen=True)
class DiversePromptConfig(MinorityPromptConfig):
    diversity_weight: float = param(1.0, "weight of the diversity objective J̄ (MP Eq. 9)")
    minority_weight: float = param(0.0, "weight of the minority objective J̃ added to J̄ (0 = diversity alone)")

    def validate(self, context: MethodContext) -> None:
        super().validate(context)
        groups = context.group_ids or []
        counts = {g: groups.count(g) for g in groups}
        if not counts or min(counts.values()) < 2:
            raise MinorityError("diverse-prompt needs at least 2 images per prompt in a batch: use --images-per-prompt "
                                "2 or more (or several seeds).")


def initial_vectors(encoder: PromptEncoder, cfg: MinorityPromptConfig, family: str, batch: int,
                    generators: list) -> list[torch.Tensor]:
    """v_T^(0) per encoder ``(B, num_tokens, D_k)``: word embedding, vocabulary mean, or random (per-sample draws
    scaled to the embedding table's std)."""
    out = []
    init_word = cfg.resolved(family)["init_word"]
    for tok, enc in zip(encoder.tokenizers, encoder.text_encoders):
        table = enc.get_input_embeddings().weight.detach()
        if cfg.init == "word":
            row = table[word_token_id(tok, init_word)]
            v = row.expand(batch, cfg.num_tokens, -1).clone()
        elif cfg.init == "mean":
            v = table.mean(0).expand(batch, cfg.num_tokens, -1).clone()
        else:
            v = randn_per_sample(generators, (cfg.num_tokens, table.shape[1]), device=table.device).to(table.dtype)
            v = v * table.float().std().to(table.dtype)
        out.append(v.float())
    return out


def _build(cfg: MinorityPromptConfig, ctx: MethodContext, objective: Objective) -> list[Hook]:
    enc: PromptEncoder = ctx.prompt_encoder
    comps = ctx.components
    if cfg.gradient_checkpointing and hasattr(comps.unet, "enable_gradient_checkpointing"):
        comps.unet.enable_gradient_checkpointing()
    gens = ctx.extra["generators"]
    r = cfg.resolved(comps.family)
    hook = PromptOptimizer(
        enc, ctx.prompts, ctx.seeds, ctx.group_ids or list(range(len(ctx.prompts))), ctx.extra["cond"],
        ctx.extra["uncond"], objective, initial_vectors(enc, cfg, comps.family, len(ctx.prompts), gens), ctx.steps,
        cfg.opt_steps, cfg.lr, r["opt_every"], cfg.opt_window, cfg.perturb, cfg.base_prompt_between,
        cfg.token_position, cfg.num_tokens, placeholder_strings(cfg.placeholder, ctx.seeds, len(ctx.prompts)),
    )
    return [hook]


def _minority_objective(cfg: MinorityPromptConfig) -> MinorityObjective:
    return MinorityObjective(cfg.sg_lambda, cfg.tweedie_cfg, cfg.stop_grad_second, cfg.cv_in_second)


def _build_minority(cfg: MinorityPromptConfig, ctx: MethodContext) -> list[Hook]:
    return _build(cfg, ctx, _minority_objective(cfg))


def _build_diverse(cfg: DiversePromptConfig, ctx: MethodContext) -> list[Hook]:
    terms = [(cfg.diversity_weight, DiversityObjective()), (cfg.minority_weight, _minority_objective(cfg))]
    return _build(cfg, ctx, WeightedSum([t for t in terms if t[0] != 0]))


register_method(Method(
    "minority-prompt", "MinorityPrompt: optimise a learnable prompt token to maximise the minority objective (MP Eq. 8)",
    MinorityPromptConfig, build_hooks=_build_minority,
))
register_method(Method(
    "diverse-prompt", "MinorityPrompt's diversity objective over the images of one prompt (MP Eq. 9)",
    DiversePromptConfig, build_hooks=_build_diverse, whole_prompt_batches=True,
))
