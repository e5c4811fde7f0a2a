"""The benchmark protocols: which methods (arms) run, on which model, evaluated how, at which size.

A protocol is data, not code: a tuple of :class:`Arm` (a labelled method + hyperparameters), a tuple of
:class:`EvalGroup` (metrics computed together against one reference) and two :class:`Size` presets
(``full`` = the documented reproduction, ``quick`` = the CI smoke size). :mod:`.quality` and :mod:`.perf`
run them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from minority.data.captions import class_prompts as caption_prompts
from minority.errors import MinorityError

FASHION_CLASS_NAMES: tuple[str, ...] = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)


@dataclass(frozen=True)
class Arm:
    """One column of a comparison: ``method`` with ``params`` (SPEC §2 names), shown as ``name``."""

    name: str
    method: str
    params: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """Folder-safe name (``"+tweedie_cfg"`` -> ``"plus-tweedie-cfg"``)."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower().replace("+", "plus-")).strip("-")


@dataclass(frozen=True)
class EvalGroup:
    """Metrics evaluated together against one reference.

    Attributes:
        name: short name (the evaluation folder is ``eval-<name>``).
        metrics: evaluation-suite metric names (:data:`minority.metrics.METRICS`).
        dataset: default reference source (``fashion-mnist:test``); ``--reference`` replaces it.
        options: reference options kept even when the source is replaced (``{"minority": "0.1"}``).
    """

    name: str
    metrics: tuple[str, ...]
    dataset: str | None = None
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Size:
    """A protocol size: prompts (or classes), seeds per prompt, sampling steps (None = the model family's
    default) and, for the quick size, how many images of the default dataset to use as reference."""

    prompts: int
    seeds: int
    steps: int | None = None
    reference_limit: int | None = None
    settings: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Protocol:
    """A benchmark protocol.

    Attributes:
        name: CLI name (``minority benchmark NAME``).
        title: heading of ``results.md``.
        source: the paper table it reproduces.
        kind: ``"text"`` (prompts on an SD-type model), ``"pixel"`` (class labels on a pixel model) or ``"perf"``.
        arms: the compared methods, in table order (the first is the baseline of ratios).
        groups: evaluations (empty for ``perf``).
        full, quick: sizes.
        default_model: ``None`` = :func:`minority.pipelines.loading.default_model`.
        optional_metrics: added to the first group when their models are available (``clipscore``).
        notes: lines printed under the table.
    """

    name: str
    title: str
    source: str
    kind: str
    arms: tuple[Arm, ...]
    groups: tuple[EvalGroup, ...]
    full: Size
    quick: Size
    default_model: str | None = None
    optional_metrics: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def select(self, names: list[str] | tuple[str, ...]) -> tuple[Arm, ...]:
        """The arms named in ``names`` (by name or slug), in protocol order; all when empty."""
        if not names:
            return self.arms
        known = {a.name: a for a in self.arms} | {a.slug: a for a in self.arms}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise MinorityError(f"{self.name} has no method {unknown[0]!r}: choose from "
                                f"{', '.join(a.name for a in self.arms)}.")
        wanted = {known[n].name for n in names}
        return tuple(a for a in self.arms if a.name in wanted)


MP_QUALITY = ("precision", "recall", "density", "coverage")
LOW_DENSITY = ("avgknn", "lof", "rarity")
_FULL_TEXT = Size(prompts=10, seeds=50)
_QUICK_TEXT = Size(prompts=2, seeds=4, steps=10, reference_limit=500,
                   settings=(("likelihood_rtol", 1e-3), ("likelihood_atol", 1e-3)))
_LIKELIHOOD_NOTE = ("likelihood is the PF-ODE negative log-likelihood in bits/dim of the model's (latent) space: "
                    "higher = less likely = more minority. MP's 'Likelihood ↓' column is the same quantity read "
                    "the other way (lower log-likelihood). png-bpp is the PNG-compressed size in bits per pixel: "
                    "image detail, which likelihood also tracks (see 'Likelihood and image detail').")
_SET_NOTE = ("recall, coverage, fd and sfid are set-level metrics: they have no per-image 95% CI (shown as the "
             "value alone); rerun with more seeds to see their variability.")
_TINY_NOTE = "Random tiny models (tiny-random-*) draw noise: their numbers only show that the protocol runs."

PROTOCOLS: dict[str, Protocol] = {}


def _register(p: Protocol) -> Protocol:
    PROTOCOLS[p.name] = p
    return p


_register(Protocol(
    name="mp-table1", title="MinorityPrompt Tab. 1: quantitative comparison",
    source="Um & Ye, MinorityPrompt (CVPR 2025), Table 1", kind="text",
    arms=(Arm("ddim", "ddim"), Arm("null-prompt", "null-prompt"), Arm("cads", "cads"), Arm("cfgpp", "cfgpp"),
          Arm("sgms", "sgms"), Arm("boost-skip", "boost-skip"), Arm("minority-prompt", "minority-prompt")),
    groups=(EvalGroup("main", ("alignment", *MP_QUALITY, "likelihood", "png-bpp", *LOW_DENSITY), "fashion-mnist:test"),),
    full=_FULL_TEXT, quick=_QUICK_TEXT, optional_metrics=("clipscore",),
    notes=(_LIKELIHOOD_NOTE, _SET_NOTE, _TINY_NOTE),
))

_register(Protocol(
    name="mp-table2", title="MinorityPrompt Tab. 2: ablations of the objective (Eq. 7 vs the naive Eq. 6)",
    source="Um & Ye, MinorityPrompt (CVPR 2025), Table 2", kind="text",
    arms=(Arm("ddim", "ddim"),
          Arm("proposed", "minority-prompt"),
          Arm("+tweedie_cfg", "minority-prompt", {"tweedie_cfg": True}),
          Arm("+stop_grad_second", "minority-prompt", {"stop_grad_second": True}),
          Arm("+cv_in_second", "minority-prompt", {"cv_in_second": True}),
          Arm("+all (Eq. 6)", "minority-prompt", {"tweedie_cfg": True, "stop_grad_second": True, "cv_in_second": True})),
    groups=(EvalGroup("main", ("alignment", *MP_QUALITY, "likelihood", "png-bpp"), "fashion-mnist:test"),),
    full=_FULL_TEXT, quick=_QUICK_TEXT, optional_metrics=("clipscore",),
    notes=(_LIKELIHOOD_NOTE, _SET_NOTE, _TINY_NOTE),
))

_register(Protocol(
    name="mp-table3", title="MinorityPrompt Tab. 3: diversity (Eq. 9)",
    source="Um & Ye, MinorityPrompt (CVPR 2025), Table 3", kind="text",
    arms=(Arm("ddim", "ddim"), Arm("cads", "cads"), Arm("diverse-prompt", "diverse-prompt")),
    groups=(EvalGroup("main", ("alignment", *MP_QUALITY, "ibs"), "fashion-mnist:test"),),
    full=Size(prompts=10, seeds=16), quick=Size(prompts=2, seeds=4, steps=10, reference_limit=500),
    optional_metrics=("clipscore",),
    notes=("ibs is the mean off-diagonal cosine similarity of the --features features of the images of one prompt "
           "(MP uses DINO ViT-B/8: --set ibs_features=dino-vitb8 --set ibs_weights=DIR); its CI is over prompts.",
           _SET_NOTE, _TINY_NOTE),
))

_register(Protocol(
    name="sgms-table1", title="SGMS Tab. 1: minority generation on a pixel-space class-conditional model",
    source="Um & Ye, Self-guided minority sampling (ECCV 2024), Table 1", kind="pixel",
    arms=(Arm("ancestral", "ancestral"), Arm("ddim", "ddim"), Arm("sgms", "sgms", {"guide_every": 1}),
          Arm("sgms (guide_every=5)", "sgms", {"guide_every": 5}),
          Arm("boost-skip (γ=2.5, Δt=3)", "boost-skip", {"gamma": 2.5, "skip": 3}),
          Arm("boost-skip (γ=4, Δt=3)", "boost-skip", {"gamma": 4.0, "skip": 3})),
    groups=(EvalGroup("quality", ("fd", "sfid", "precision", "recall"), "fashion-mnist:train", (("minority", "0.1"),)),
            EvalGroup("rarity", LOW_DENSITY, "fashion-mnist:train")),
    full=Size(prompts=10, seeds=100), quick=Size(prompts=2, seeds=4, steps=20, reference_limit=1000),
    default_model="fashion-ddpm",
    notes=("fd/sfid/precision/recall are measured against the 10% most unique real images (highest AvgkNN in the "
           "--features space), as SGMS does; avgknn/lof/rarity against the whole reference (higher = rarer). "
           "fd is the Fréchet distance of the --features features (cFID conventions; Inception with --features "
           "inception --set weights=...).", _SET_NOTE),
))

_register(Protocol(
    name="perf", title="Performance: time, memory and UNet passes per method and backbone",
    source="issue 7 (this project)", kind="perf",
    arms=(Arm("ddim", "ddim"), Arm("null-prompt", "null-prompt"), Arm("cads", "cads"), Arm("cfgpp", "cfgpp"),
          Arm("sgms", "sgms"), Arm("boost-skip", "boost-skip"), Arm("minority-prompt", "minority-prompt"),
          Arm("diverse-prompt", "diverse-prompt")),
    groups=(), full=Size(prompts=4, seeds=4), quick=Size(prompts=2, seeds=4, steps=10),
    notes=("seconds per image: wall time of a batched pipeline call divided by its images, after one warm-up call; "
           "the CI is over batches. UNet forward = batched UNet calls per batch (a CFG pair counts once); UNet "
           "backward = UNet forwards back-propagated through (counted by a gradient hook on the UNet output); "
           "backward calls = optimisation iterations (minority-prompt, diverse-prompt) or guided steps (sgms).",
           "Peak memory: on CPU the peak resident set size of the process during the timed calls (VmHWM, reset "
           "before each method), on CUDA torch.cuda.max_memory_allocated."),
))

PIXEL_PERF_ARMS = (Arm("ancestral", "ancestral"), Arm("ddim", "ddim"), Arm("sgms", "sgms"),
                   Arm("sgms (guide_every=5)", "sgms", {"guide_every": 5}), Arm("boost-skip", "boost-skip"))


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``, or a one-line error listing them."""
    if name not in PROTOCOLS:
        raise MinorityError(f"Unknown protocol {name!r}: choose one of {', '.join(PROTOCOLS)}.")
    return PROTOCOLS[name]


PROMPT_TEMPLATE = "a photo of {a}"


def class_prompts(n: int, template: str = PROMPT_TEMPLATE) -> list[str]:
    """The first ``n`` Fashion-MNIST class prompts ("a photo of a t-shirt", ...); ``template`` takes ``{a}`` (with
    article) or ``{n}`` (bare name)."""
    if "{a}" not in template and "{n}" not in template:
        raise MinorityError(f"--prompt-template {template!r} must contain {{a}} (article + class) or {{n}} (class).")
    prompts = caption_prompts(template)
    if not 1 <= n <= len(prompts):
        raise MinorityError(f"--prompts must be in 1..{len(prompts)} (one per Fashion-MNIST class), got {n}.")
    return prompts[:n]


def reference_spec(group: EvalGroup, override: str | None, limit: int | None) -> str:
    """The reference spec of ``group``: ``override`` (or the group's dataset, limited to ``limit`` images in the
    quick size) followed by the group's options (``:minority=0.1``)."""
    if override is None and group.dataset is None:
        raise MinorityError(f"evaluation {group.name!r} needs a reference: pass --reference DIR_OR_DATASET.")
    spec = override if override is not None else group.dataset
    if override is None and limit:
        spec += f":limit={limit}"
    return spec + "".join(f":{k}={v}" for k, v in group.options)
