"""``BenchmarkConfig``: everything that defines a ``minority benchmark`` run, and its resolution into a plan.

The config is what the user asked for (``None`` = the protocol's default); :func:`resolve` turns it into a
:class:`Plan` with every value explicit (model, prompts, seeds, steps, references, evaluation settings),
which is written to ``benchmark.json`` so that the run can be repeated exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minority.benchmark.protocols import PIXEL_PERF_ARMS, Arm, Protocol, get_protocol, reference_spec
from minority.errors import MinorityError
from minority.methods import get_method
from minority.pipelines.loading import default_model
from minority.runs.seeds import parse_seeds


@dataclass(frozen=True)
class BenchmarkConfig:
    """One ``minority benchmark`` run (written into ``benchmark.json``)."""

    protocol: str
    out: str | None = None
    model: str | None = None
    prompts: int | None = None
    seeds: str | None = None
    steps: int | None = None
    guidance: float | None = None
    device: str = "auto"
    quick: bool = False
    reference: str | None = None
    features: str = "efficientnet-lite0"
    methods: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    batch_size: int = 4
    threads: int = 0
    clip_weights: str | None = None
    grid_rows: int = 8
    max_batch: int = 64
    resume: bool = False
    overwrite: bool = False
    generate_only: bool = False
    deterministic: bool = False
    prompt_template: str | None = None  # None = "a photo of {a}"

    def validate(self, protocol: Protocol | None = None) -> None:
        protocol = protocol or get_protocol(self.protocol)
        for name, value, low in (("--prompts", self.prompts, 1), ("--steps", self.steps, 1),
                                 ("--batch-size", self.batch_size, 1), ("--threads", self.threads, 0),
                                 ("--grid-rows", self.grid_rows, 1), ("--max-batch", self.max_batch, 1)):
            if value is not None and value < low:
                raise MinorityError(f"{name} must be >= {low} (got {value}).")
        if self.resume and self.overwrite:
            raise MinorityError("--resume keeps earlier results and --overwrite deletes them: pass only one.")
        if self.generate_only and protocol.kind == "perf":
            raise MinorityError("--generate-only applies to the quality protocols (mp-table1/2/3, sgms-table1), "
                                "not to perf, which times the generation itself.")


@dataclass
class Plan:
    """A resolved benchmark: explicit values for everything the run uses."""

    protocol: Protocol
    config: BenchmarkConfig
    out: str
    models: list[str]
    arms: tuple[Arm, ...]
    prompts: int
    seeds: list[int]
    steps: int | None
    references: dict[str, str]
    settings: dict

    def describe(self) -> dict:
        """JSON-able summary for ``benchmark.json``."""
        return {"protocol": self.protocol.name, "models": self.models, "arms": [
            {"name": a.name, "method": a.method, "params": {**a.params, **self.arm_params(a)}} for a in self.arms],
            "prompts": self.prompts, "seeds": self.seeds, "steps": self.steps, "guidance": self.config.guidance,
            "references": self.references, "evaluate_settings": self.settings, "features": self.config.features,
            "size": "quick" if self.config.quick else "full"}

    def arm_params(self, arm: Arm) -> dict:
        """The arm's hyperparameters plus the ``--param`` overrides that its method accepts."""
        own = method_params(arm.method)
        return {**arm.params, **{k: v for k, v in self.config.params.items() if k in own}}


def method_params(method: str) -> set[str]:
    """Hyperparameter names of ``method``."""

    return {f.name for f in get_method(method).hyperparameters()}


def parse_seed_option(text: str | None, default: int) -> list[int]:
    """``--seeds``: a count S (seeds 0..S-1) or an explicit list (``0-7``, ``3,5``)."""
    if text is None:
        return list(range(default))
    text = str(text).strip()
    if text.isdigit():
        n = int(text)
        if n < 1:
            raise MinorityError(f"--seeds must be >= 1 (got {n}); or give a list such as 0-7.")
        return list(range(n))
    return parse_seeds(text)


def resolve(cfg: BenchmarkConfig, protocol: Protocol | None = None) -> Plan:
    """Fill the protocol's defaults into ``cfg`` (quick or full size); ``protocol`` replaces the registered protocol
    named ``cfg.protocol`` (a sweep's arms are built at run time)."""

    cfg.validate(protocol)
    p = protocol or get_protocol(cfg.protocol)
    size = p.quick if cfg.quick else p.full
    if cfg.model:
        models = [m.strip() for m in cfg.model.split(",") if m.strip()]
    elif p.kind == "perf":
        models = list(dict.fromkeys([default_model(), "tiny-random-sd", "tiny-random-sdxl"]))
    else:
        models = [p.default_model or default_model()]
    if p.kind != "perf" and len(models) != 1:
        raise MinorityError(f"{p.name} runs on one model: pass a single --model (got {len(models)}).")
    arms = p.select(cfg.methods)
    known_params = set()
    for a in (*p.arms, *_pixel_arms(p)):
        known_params |= method_params(a.method)
    unknown = sorted(set(cfg.params) - known_params)
    if unknown:
        raise MinorityError(f"--param {unknown[0]} is not a hyperparameter of any {p.name} method.")
    references = {g.name: reference_spec(g, cfg.reference, size.reference_limit) for g in p.groups}
    settings = {**dict(size.settings), **cfg.settings}
    out = cfg.out or f"outputs/benchmark/{p.name}" + ("-quick" if cfg.quick else "")
    return Plan(protocol=p, config=cfg, out=out, models=models, arms=arms,
                prompts=cfg.prompts if cfg.prompts is not None else size.prompts,
                seeds=parse_seed_option(cfg.seeds, size.seeds), steps=cfg.steps if cfg.steps is not None else size.steps,
                references=references, settings=settings)


def _pixel_arms(p: Protocol) -> tuple[Arm, ...]:
    return PIXEL_PERF_ARMS if p.kind == "perf" else ()
