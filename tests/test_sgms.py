"""SGMS on pixel models (parity of the base samplers with diffusers, guidance maths) and the latent baseline."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from minority import MinorityError, PixelPipeline
from minority.core.conditioning import Conditioning
from minority.core.denoiser import Denoiser
from minority.core.rng import make_generators, randn_per_sample
from minority.core.sampling import StepContext
from minority.methods.sgms import (
    SGMS,
    SGMSHook,
    guided_index,
    l2_distance,
    minority_score,
    normalise,
    reconstruction_loss,
)


def _pixel_folder(path, learned: bool, classes: int | None = None, null: int | None = None):
    import json

    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(1)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=2 if learned else 1, layers_per_block=1,
                       block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=32, num_class_embeds=classes)
    sch = DDPMScheduler(num_train_timesteps=1000, variance_type="learned_range" if learned else "fixed_small")
    DDPMPipeline(unet, sch).save_pretrained(path)
    if null is not None:
        idx = json.loads((path / "model_index.json").read_text())
        idx["null_class_label"] = null
        (path / "model_index.json").write_text(json.dumps(idx))
    return path


@pytest.fixture(scope="module")
def learned_dir(tmp_path_factory):
    return _pixel_folder(tmp_path_factory.mktemp("px") / "learned", learned=True)


@pytest.fixture(scope="module")
def fixed_dir(tmp_path_factory):
    return _pixel_folder(tmp_path_factory.mktemp("px") / "fixed", learned=False)


@pytest.fixture(scope="module")
def classes_dir(tmp_path_factory):
    return _pixel_folder(tmp_path_factory.mktemp("px") / "cls", learned=False, classes=4, null=3)


def test_ancestral_matches_ddpm_pipeline_learned_range(learned_dir):
    from diffusers import DDPMPipeline

    ref = DDPMPipeline.from_pretrained(str(learned_dir))
    ref.set_progress_bar_config(disable=True)
    a = ref(batch_size=2, generator=make_generators([0, 1]), num_inference_steps=20, output_type="np").images
    b = PixelPipeline.from_pretrained(str(learned_dir))(num_images=2, seeds=[0, 1], num_inference_steps=20,
                                                         output_type="np").images
    assert np.abs(a - b).max() < 1e-5


def test_ddim_matches_ddim_pipeline(fixed_dir):
    from diffusers import DDIMPipeline

    ref = DDIMPipeline.from_pretrained(str(fixed_dir))
    ref.set_progress_bar_config(disable=True)
    a = ref(batch_size=2, generator=make_generators([0, 1]), num_inference_steps=10, eta=0.0, output_type="np").images
    b = PixelPipeline.from_pretrained(str(fixed_dir))(num_images=2, seeds=[0, 1], num_inference_steps=10,
                                                       method="ddim", output_type="np").images
    assert np.abs(a - b).max() < 1e-4


def test_ddim_on_a_learned_variance_model_matches_diffusers_ddim_on_the_eps_half(learned_dir):
    """DDIM (η = 0) on a learned-range model uses only the ε half of the output: equal to diffusers'
    DDIMScheduler driven by the first half of the UNet output (DDIMPipeline itself cannot take 2C channels)."""
    from diffusers import DDIMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(str(learned_dir), subfolder="unet").eval()
    sched = DDIMScheduler.from_pretrained(str(learned_dir), subfolder="scheduler")
    sched.set_timesteps(10)
    x = randn_per_sample(make_generators([0, 1]), (1, 8, 8))
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample[:, :1], t, x, eta=0.0).prev_sample
    ref = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    ours = PixelPipeline.from_pretrained(str(learned_dir))(num_images=2, seeds=[0, 1], num_inference_steps=10,
                                                            method="ddim", output_type="np").images
    assert np.abs(ref - ours).max() < 5e-4  # float32 diffusers vs float64 ᾱ here; an 8-bit level is 3.9e-3


@pytest.mark.parametrize("solver", ["ancestral", "ddim"])
def test_scale_zero_is_base_sampler(fixed_dir, solver):
    pipe = PixelPipeline.from_pretrained(str(fixed_dir))
    kw = dict(num_images=2, seeds=[3, 4], num_inference_steps=12, output_type="latent")
    base = pipe(method=solver, **kw).latents
    zero = pipe(method="sgms", scale=0.0, solver=solver, distance="l2", guide_every=1, **kw).latents
    assert torch.equal(base, zero)


def test_reused_forward_equals_fresh_prediction(fixed_dir):
    """With a negligible scale on DDIM (no sampler noise) the guided path, which reuses the gradient forward
    for the update, reproduces plain DDIM; and it costs 1 + mc_samples calls per guided step, not 2 + mc."""
    pipe = PixelPipeline.from_pretrained(str(fixed_dir))
    kw = dict(num_images=2, seeds=[3, 4], num_inference_steps=10, output_type="latent")
    base = pipe(method="ddim", **kw)
    tiny = pipe(method="sgms", scale=1e-30, solver="ddim", distance="l2", guide_every=2, mc_samples=2, **kw)
    assert torch.allclose(base.latents, tiny.latents, atol=1e-6)
    assert tiny.settings["unet_calls"] == 10 + 5 * 2  # 10 steps (5 reuse the gradient forward) + 5 × mc_samples


def _ctx(den, z, t, t_next, gens, variance_type="fixed_small"):
    return StepContext(index=0, num_steps=10, t=t, t_next=t_next, alpha=den.alpha(t), alpha_next=den.alpha(t_next),
                       z=z, cond=Conditioning(), uncond=None, guidance=1.0, generators=gens, denoiser=den,
                       variance_type=variance_type)


def test_guidance_direction_increases_L_and_gradient_only_through_first_branch(fixed_dir):
    pipe = PixelPipeline.from_pretrained(str(fixed_dir), torch_dtype=torch.float64)
    den = pipe.denoiser
    z = randn_per_sample(make_generators([5, 6]), (1, 8, 8)).double()
    t, p = 500, 800
    cond = Conditioning()

    def L(x, frozen=None):
        x0 = den(x, t, cond).x0
        if frozen is None:
            return reconstruction_loss(den, x0, p, cond, l2_distance, make_generators([9, 10]))
        return l2_distance(x0, frozen)

    x = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(L(x).sum(), x)
    # gradient = ∂/∂x d(x̂0(x), c) with c = the (frozen) reconstruction at x: finite differences
    with torch.no_grad():
        x0 = den(z, t, cond).x0
        a = den.alpha(p)
        eps = randn_per_sample(make_generators([9, 10]), (1, 8, 8)).double()
        frozen = den(a**0.5 * x0 + (1 - a) ** 0.5 * eps, p, cond).x0
        d = torch.randn_like(z)
        h = 1e-6
        fd = (L(z + h * d, frozen) - L(z - h * d, frozen)).sum() / (2 * h)
        assert torch.allclose((g * d).sum(), fd, rtol=1e-5)


def test_small_step_along_guidance_raises_L():
    """On an exact mixture model, moving x_t along ĝ increases the full L (reconstruction not frozen).

    ĝ is the gradient with the reconstruction branch stopped; it raises the full L where the re-noised
    reconstruction is confident about its mode (here p = 0.2·T). Near mode-switching noise levels the
    reconstruction itself moves and the stop-gradient direction need not raise L (checked by hand, p = 0.6·T)."""
    ac = torch.linspace(0.9999, 0.001, 1000, dtype=torch.float64)
    den = Denoiser(_Mixture(ac, sigma0=0.3), ac, "epsilon")
    cond, t, p = Conditioning(), 300, 200
    g0 = torch.Generator().manual_seed(3)
    a = den.alpha(t)
    x0 = den.unet.mu[[0, 1, 2, 0, 1, 2]] + 0.3 * torch.randn(6, 1, 4, 4, generator=g0, dtype=torch.float64)
    z = a**0.5 * x0 + (1 - a) ** 0.5 * torch.randn(6, 1, 4, 4, generator=g0, dtype=torch.float64)

    def L(x):
        return reconstruction_loss(den, den(x, t, cond).x0, p, cond, l2_distance, make_generators(range(6)), 16)

    x = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(L(x).sum(), x)
    with torch.no_grad():
        gain = L(z + 1e-2 * normalise(g, "linf")) - L(z)
    assert (gain > 0).all(), gain


def test_normalisations_and_var_schedule():
    g = torch.tensor([[[[3.0, -4.0]]], [[[0.5, 0.0]]]])
    assert torch.allclose(normalise(g, "linf"), torch.tensor([[[[0.75, -1.0]]], [[[1.0, 0.0]]]]))
    assert torch.allclose(normalise(g, "l2"), torch.tensor([[[[0.6, -0.8]]], [[[1.0, 0.0]]]]))
    assert torch.equal(normalise(g, "none"), g)
    assert torch.equal(normalise(torch.zeros(1, 1, 2, 2), "linf"), torch.zeros(1, 1, 2, 2))  # no NaN at g = 0


class _Const(torch.nn.Module):
    """x̂0 = 0.5·x (a linear 'model'): L and its gradient are known in closed form."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(in_channels=1, out_channels=1, sample_size=2)

    def forward(self, z, t, class_labels=None):
        return SimpleNamespace(sample=0.5 * z)  # sample-prediction


def test_var_and_fixed_schedules_hand_checked():
    ac = torch.linspace(0.9999, 0.01, 1000, dtype=torch.float64)
    den = Denoiser(_Const(), ac, "sample")
    z = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]]])
    for schedule in ("fixed", "var"):
        ctx = _ctx(den, z.clone(), 600, 500, make_generators([0]))
        m = SGMS(scale=2.0, perturb=0.8, guide_every=1, normalize="linf", schedule=schedule, distance="l2", solver="ddim")
        SGMSHook(m, l2_distance).before_step(ctx)  # DDIM form: the step starts from x_t + w·ĝ
        # L = ‖0.5x − c‖², ∂L/∂x = 2·0.5·(0.5x − c); reconstruction c = 0.5·(√ᾱ_p·0.5x + √(1−ᾱ_p) ε)
        a_p = float(ac[800])
        eps = randn_per_sample(make_generators([0]), (1, 2, 2))
        c = 0.5 * (a_p**0.5 * 0.5 * z + (1 - a_p) ** 0.5 * eps)
        g = 0.5 * 2 * (0.5 * z - c)
        expected = 2.0 * g / g.abs().max()
        if schedule == "var":
            a, an = float(ac[600]), float(ac[500])
            expected = expected * (1 - an) / (1 - a) * (1 - a / an)
        assert torch.allclose(ctx.z - z, expected.float(), atol=1e-6)


def _authors_guided(S: int, N: int) -> list[int]:
    """The authors' rule written out: respaced index t runs S−1, …, 0 over the loop; guide when t % N == 0."""
    out = []
    for loop_index, t in enumerate(range(S - 1, -1, -1)):
        if t % N == 0:
            out.append(loop_index)
    return out


def test_authors_rule_examples():
    assert _authors_guided(50, 5) == list(range(4, 50, 5))  # 4, 9, …, 49
    assert _authors_guided(250, 2) == list(range(1, 250, 2))
    assert _authors_guided(7, 3) == [0, 3, 6]


@pytest.mark.parametrize("S,N", [(50, 5), (10, 3), (12, 5), (7, 1), (9, 4), (250, 2), (6, 10)])
def test_guided_indices_follow_the_authors_rule(S, N):
    assert [i for i in range(S) if guided_index(i, S, N)] == _authors_guided(S, N)


@pytest.mark.parametrize("solver,steps,N", [("ancestral", 10, 3), ("ddim", 10, 4), ("ancestral", 7, 2)])
def test_guided_steps_of_a_run(fixed_dir, solver, steps, N):
    pipe = PixelPipeline.from_pretrained(str(fixed_dir))
    out = pipe(num_images=1, num_inference_steps=steps, method="sgms", guide_every=N, distance="l2", solver=solver,
               output_type="latent")
    assert out.trajectories[0]["step"] == _authors_guided(steps, N)
    assert out.trajectories[0]["step"][-1] == steps - 1  # the last step is always guided


def test_guided_steps_latent(tiny_sd):
    out = tiny_sd(["a bag"], method="sgms", num_inference_steps=7, guidance_scale=3.0, seeds=[0], guide_every=3,
                  output_type="latent")
    assert out.trajectories[0]["step"] == _authors_guided(7, 3)


def test_guide_every_and_switch_off_steps(fixed_dir):
    pipe = PixelPipeline.from_pretrained(str(fixed_dir))
    out = pipe(num_images=1, num_inference_steps=10, method="sgms", guide_every=1, distance="l2", schedule="switch-off",
               switch_off_at=0.5, output_type="latent")
    # grid 900, 800, ..., 0: guided while t > 500
    assert out.trajectories[0]["step"] == [0, 1, 2, 3]


class _Mixture(torch.nn.Module):
    """Exact ε-predictor of a 3-pattern Gaussian mixture (component std σ0) on 1×4×4 images."""

    def __init__(self, ac, sigma0: float = 0.05):
        super().__init__()
        self.s0 = sigma0**2
        g = torch.Generator().manual_seed(0)
        self.mu = torch.randn(3, 1, 4, 4, generator=g).double().sign()  # three well-separated ±1 patterns
        self.ac = ac
        self.w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.config = SimpleNamespace(in_channels=1, out_channels=1, sample_size=4)

    def forward(self, z, t, class_labels=None):
        a = float(self.ac[int(t)])
        s0 = self.s0
        var = a * s0 + 1 - a
        diff = z[:, None] - a**0.5 * self.mu[None]  # (B, K, ...)
        logw = -(diff.pow(2).flatten(2).sum(-1)) / (2 * var)
        w = torch.softmax(logw, dim=1)
        post = self.mu[None] + (a**0.5 * s0 / var) * diff  # E[x0 | z, k]
        x0 = (w[..., None, None, None] * post).sum(1)
        return SimpleNamespace(sample=(z - a**0.5 * x0) / (1 - a) ** 0.5)


def test_minority_score_ranks_rare_image_first():
    ac = torch.linspace(0.9999, 0.001, 1000, dtype=torch.float64)
    model = _Mixture(ac)
    den = Denoiser(model, ac, "epsilon")
    g = torch.Generator().manual_seed(1)
    common = model.mu[[0, 1, 2, 0, 1]] + 0.05 * torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    rare = (0.5 * model.mu[0] + 0.5 * model.mu[1])[None]  # between two modes: a low-density sample
    imgs = torch.cat([common, rare])
    scores = minority_score(den, imgs, Conditioning(), make_generators(range(6)), perturb=0.3, mc_samples=8)
    assert int(scores.argmax()) == 5 and scores[5] > 3 * scores[:5].max()


def test_batch_size_invariance(learned_dir):
    pipe = PixelPipeline.from_pretrained(str(learned_dir))
    kw = dict(num_inference_steps=6, method="sgms", guide_every=2, distance="l2", output_type="latent")
    full = pipe(num_images=3, seeds=[0, 1, 2], **kw).latents
    parts = torch.cat([pipe(num_images=1, seeds=[s], **kw).latents for s in (0, 1, 2)])
    assert torch.allclose(full, parts, atol=1e-5)


def test_class_conditional_and_label_errors(classes_dir, fixed_dir):
    pipe = PixelPipeline.from_pretrained(str(classes_dir))
    out = pipe(class_labels=[0, 2, None], num_inference_steps=3, output_type="latent")
    assert out.latents.shape == (3, 1, 8, 8)
    out = pipe(class_labels=[1, 1], num_inference_steps=3, guidance_scale=2.0, output_type="latent")
    assert torch.isfinite(out.latents).all()
    with pytest.raises(MinorityError, match="out of range"):
        pipe(class_labels=[7], num_inference_steps=2)
    with pytest.raises(MinorityError, match="unconditional"):
        PixelPipeline.from_pretrained(str(fixed_dir))(class_labels=[1], num_inference_steps=2)


@pytest.mark.parametrize("params,message", [
    ({"distance": "cosine"}, "distance must be one of enet-lpips, lpips, l2, l1"),
    ({"perturb": 1.2}, r"perturb must be in \(0, 1\)"),
    ({"scale": float("nan")}, "scale must be a finite number"),
    ({"guide_every": 0}, "guide_every must be >= 1"),
    ({"distance": "lpips"}, "enet-lpips"),
])
def test_bad_sgms_inputs(fixed_dir, params, message):
    with pytest.raises(MinorityError, match=message):
        PixelPipeline.from_pretrained(str(fixed_dir))(num_images=1, num_inference_steps=2, method="sgms", **params)


def test_latent_sgms_on_text_to_image(tiny_sd):
    out = tiny_sd(["a bag", "a coat"], method="sgms", num_inference_steps=10, guidance_scale=3.0, seeds=[0, 1],
                  output_type="latent", scale=2.0)
    assert out.settings["params"]["distance"] == "l2" and out.settings["params"]["solver"] == "ddim"
    # 10 sampling steps; guided steps 4 and 9: the conditional forward with gradient is reused, the
    # unconditional branch and the re-noised reconstruction are one call each
    assert out.settings["unet_calls"] == 8 + 2 * 3
    base = tiny_sd(["a bag", "a coat"], method="ddim", num_inference_steps=10, guidance_scale=3.0, seeds=[0, 1],
                   output_type="latent")
    assert not torch.allclose(out.latents, base.latents, atol=1e-4)
    with pytest.raises(MinorityError, match="compares images"):
        tiny_sd("a bag", method="sgms", distance="enet-lpips", num_inference_steps=2)


def test_cli_pixel_generate_and_score(classes_dir, tmp_path, capsys):
    import csv
    import json

    from minority.cli.main import main

    out = tmp_path / "g"
    code = main(["generate", "--model", str(classes_dir), "--method", "sgms", "--class-label", "2", "--class-label", "0",
                 "--seeds", "0-1", "--steps", "4", "--distance", "l2", "--guide-every", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["00000_000000.png", "00000_000001.png", "00002_000000.png", "00002_000001.png"]
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["class_label"] for r in rows} == {0, 2} and rows[0]["distance"] == "l2" and rows[0]["solver"] == "ancestral"
    code = main(["score", "--images", str(out / "images"), "--model", str(classes_dir), "--distance", "l2",
                 "--out", str(tmp_path / "s.csv"), "--mc-samples", "2"])
    assert code == 0
    table = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert len(table) == 4 and sorted(int(r["rank"]) for r in table) == [1, 2, 3, 4]
    code = main(["generate", "a prompt", "--model", str(classes_dir), "--out", str(tmp_path / "h")])
    assert code == 2 and "class-label" in capsys.readouterr().err


def test_model_folder_sampling_defaults(tmp_path):
    """``minority_defaults`` in a pixel model's model_index.json set steps and the class-conditional guidance;
    unconditional (null-class) sampling keeps guidance 1."""
    import json

    folder = _pixel_folder(tmp_path / "px", learned=False, classes=4, null=3)
    idx = json.loads((folder / "model_index.json").read_text())
    idx["minority_defaults"] = {"steps": 4, "guidance": 2.5}
    (folder / "model_index.json").write_text(json.dumps(idx))
    pipe = PixelPipeline.from_pretrained(str(folder))
    out = pipe(class_labels=[1, 2], output_type="latent")
    assert out.settings["steps"] == 4 and out.settings["guidance"] == 2.5
    assert pipe(class_labels=[None], output_type="latent").settings["guidance"] == 1.0
    assert pipe(class_labels=[1], guidance_scale=1.0, output_type="latent").settings["guidance"] == 1.0
