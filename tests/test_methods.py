"""Methods as declared objects (issue 14): validation from the declarations, the registry, per-method flags,
the shared kernel and the denoiser adapter's conversions, deprecated paths, a fast `minority --help`."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import warnings

import pytest
import torch

from minority.cli.main import build_parser
from minority.core.denoiser import clamp_level, renoise, to_eps_x0, training_target
from minority.core.kernel import reconstruction
from minority.core.params import value_type
from minority.errors import MinorityError
from minority.methods import METHODS, Method, get_method, hyperparameter, make_method, register_method


def _numeric_fields(cls):
    return [f for f in cls.hyperparameters() if value_type(f, cls) in (int, float)]


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_numeric_hyperparameter_refuses_non_finite_values(name, bad):
    cls = METHODS[name]
    for f in _numeric_fields(cls):
        with pytest.raises(MinorityError, match=f"{f.name} must be"):
            cls(**{f.name: bad})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_declarations_complete_and_defaults_valid(name):
    cls = METHODS[name]
    m = cls()  # the defaults pass their own declarations
    assert cls(**m.to_dict()) == m
    for f in cls.hyperparameters():
        assert f.metadata.get("help"), f"{name}.{f.name} has no help"
    assert cls.summary and cls.kinds


def test_ranges_and_choices_checked_on_creation():
    with pytest.raises(MinorityError, match=r"lr must be > 0"):
        make_method("minority-prompt", lr=0.0)
    with pytest.raises(MinorityError, match=r"perturb must be in \(0, 1\)"):
        make_method("sgms", perturb=1.0)
    with pytest.raises(MinorityError, match="normalize must be one of linf, l2, none"):
        make_method("sgms", normalize="max")
    with pytest.raises(MinorityError, match="opt_steps must be an integer"):
        make_method("minority-prompt", opt_steps=1.5)
    with pytest.raises(MinorityError, match="has no parameter 'lr'"):
        make_method("sgms", lr=0.1)
    assert make_method("minority-prompt", perturb="annealed").perturb == "annealed"
    assert make_method("minority-prompt", perturb=0.5).perturb == 0.5
    assert make_method("cads", tau1=0).tau1 == 0.0 and isinstance(make_method("cads", tau1=0).tau1, float)


def test_method_objects_pass_through_and_replace():
    m = make_method("sgms", scale=0.3)
    assert make_method(m) is m
    assert make_method(m, {"guide_every": 2}) == get_method("sgms")(scale=0.3, guide_every=2)


def test_registered_method_gets_its_own_flags(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Sharpen(Method):
        name = "sharpen-test"
        summary = "a test method"
        amount: float = hyperparameter(0.5, "how much", low=0.0, high=1.0)

    monkeypatch.setitem(METHODS, "sharpen-test", Sharpen)
    assert register_method(Sharpen) is Sharpen
    args = build_parser(["generate", "--method", "sharpen-test"]).parse_args(
        ["generate", "x", "--method", "sharpen-test", "--amount", "0.25"])
    assert args.param_amount == 0.25
    with pytest.raises(MinorityError):
        register_method(object)


def test_help_does_not_import_torch():
    code = ("import sys\nfrom minority.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


def test_old_module_paths_import_with_a_warning():
    import minority.core.sampling as new

    sys.modules.pop("minority.sampling", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import minority.sampling as old
    assert old is new and any(issubclass(w.category, DeprecationWarning) for w in caught)
    from minority.generate import generate  # noqa: F811  (the README's 0.1 path)

    from minority.runs.generate import generate as g

    assert generate is g


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("alpha", [0.3, torch.tensor([0.2, 0.9]).view(2, 1, 1, 1)])
def test_parametrisations_are_consistent(prediction_type, alpha):
    """The network's target at z = √ᾱ x0 + √(1−ᾱ) ε converts back to exactly (ε, x0), for float or per-sample ᾱ."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, 4, generator=g,
                                                                                       dtype=torch.float64)
    a = alpha.double() if isinstance(alpha, torch.Tensor) else alpha
    z = renoise(x0, eps, a)
    e, x = to_eps_x0(training_target(x0, eps, a, prediction_type), z, a, prediction_type)
    torch.testing.assert_close(e, eps)
    torch.testing.assert_close(x, x0)


def test_reconstruction_kernel_is_renoise_then_denoise():
    x0, noise = torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    seen = {}

    def x0_at(z, s):
        seen["z"], seen["s"] = z, s
        return 0.5 * z

    out = reconstruction(x0, 7, 0.64, noise, x0_at)
    torch.testing.assert_close(seen["z"], 0.8 * x0 + 0.6 * noise)
    assert seen["s"] == 7 and torch.allclose(out, 0.5 * seen["z"])
    assert clamp_level(0.8, 1000) == 800 and clamp_level(0.0, 1000) == 1 and clamp_level(1.0, 1000) == 999


def test_timestep_pairs_leave_the_scheduler_alone(tiny_sd):
    from minority.core.schedules import timestep_pairs

    sched = tiny_sd.components.scheduler
    before = None if sched.num_inference_steps is None else list(sched.timesteps)
    timestep_pairs(sched, 7)
    after = None if sched.num_inference_steps is None else list(sched.timesteps)
    assert before == after
