"""guided-diffusion (ADM) converter: random-weight checkpoints of each of the SGMS paper's architecture
families, checked against an independent ADM forward written here from the guided-diffusion paper / README
(Dhariwal & Nichol 2021, App. A; Nichol & Dhariwal 2021) that reads the guided-diffusion state dict directly.

The reference is functional: it *defines* the checkpoint layout (it creates each named tensor the first time it
asks for it) and, run again, consumes the tensors it was given, so "every tensor consumed once" and "shapes as
the flags imply" are checked against it, not against the converter's own layout.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from minority.cli.main import main
from minority.errors import MinorityError
from minority.pipelines.adm.convert import convert_adm, convert_state_dict, load_checkpoint, respaced_steps
from minority.pipelines.adm.flags import PRESETS, parse_flags
from minority.pipelines.loading import load_components


class ADMRef:
    """Independent ADM ``UNetModel`` / ``SuperResModel`` forward over a state dict ``{name: tensor}``."""

    def __init__(self, spec: dict, state: dict | None = None, seed: int = 0, meta: bool = False):
        self.s, self.create, self.used = (state if state is not None else {}), state is None, []
        self.g = torch.Generator().manual_seed(seed)
        self.spec, self.meta = spec, meta  # meta: shapes only (full-size layouts)

    def p(self, name: str, *shape: int) -> torch.Tensor:
        if self.create and name not in self.s and self.meta:
            self.s[name] = torch.empty(shape, dtype=torch.float16, device="meta")
        if self.create and name not in self.s:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            base = torch.randn(shape, generator=self.g, dtype=torch.float64)
            if name.endswith("bias") or len(shape) == 1:
                t = 0.1 * base + (1.0 if ".norm" in name or "layers.0." in name or name.startswith("out.0") else 0.0)
            else:
                t = base / math.sqrt(fan_in)
            self.s[name] = t
        t = self.s[name]
        assert tuple(t.shape) == shape, (name, tuple(t.shape), shape)
        self.used.append(name)
        return t.float() if self.meta else t.double()

    def norm(self, name, x, c):  # GroupNorm32: 32 groups, eps 1e-5
        return F.group_norm(x, 32, self.p(f"{name}.weight", c), self.p(f"{name}.bias", c), 1e-5)

    def conv(self, name, x, cin, cout, k=3, stride=1):
        return F.conv2d(x, self.p(f"{name}.weight", cout, cin, k, k), self.p(f"{name}.bias", cout), stride, k // 2)

    def linear(self, name, x, cin, cout):
        return F.linear(x, self.p(f"{name}.weight", cout, cin), self.p(f"{name}.bias", cout))

    def resblock(self, name, x, emb, cin, cout, up=False, down=False):
        sp = self.spec
        h = F.silu(self.norm(f"{name}.in_layers.0", x, cin))
        if up:
            h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
        if down:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        h = self.conv(f"{name}.in_layers.2", h, cin, cout)
        e = self.linear(f"{name}.emb_layers.1", F.silu(emb), 4 * sp["C"], 2 * cout if sp["ss"] else cout)[..., None, None]
        if sp["ss"]:  # FiLM: norm(h)·(1 + scale) + shift
            scale, shift = e.chunk(2, dim=1)
            h = F.silu(self.norm(f"{name}.out_layers.0", h, cout) * (1 + scale) + shift)
        else:
            h = F.silu(self.norm(f"{name}.out_layers.0", h + e, cout))
        h = self.conv(f"{name}.out_layers.3", h, cout, cout)
        skip = x if cin == cout else self.conv(f"{name}.skip_connection", x, cin, cout, k=1)
        return skip + h

    def attention(self, name, x, c, heads):
        b, _, hh, ww = x.shape
        xf = x.reshape(b, c, -1)
        qkv = F.conv1d(self.norm(f"{name}.norm", xf, c), self.p(f"{name}.qkv.weight", 3 * c, c, 1), self.p(f"{name}.qkv.bias", 3 * c))
        ch, n = c // heads, xf.shape[-1]
        if self.spec["new_order"]:  # split q, k, v first, then heads
            q, k, v = (t.reshape(b * heads, ch, n) for t in qkv.chunk(3, dim=1))
        else:  # legacy: split heads first, then q, k, v
            q, k, v = qkv.reshape(b * heads, 3 * ch, n).split(ch, dim=1)
        w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(ch), dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, n)
        out = F.conv1d(a, self.p(f"{name}.proj_out.weight", c, c, 1), self.p(f"{name}.proj_out.bias", c))
        return (xf + out).reshape(b, c, hh, ww)

    def heads(self, c, up=False):
        sp = self.spec
        if sp.get("head_channels"):
            return c // sp["head_channels"]
        return sp["heads_up"] if up and sp.get("heads_up") else sp["heads"]

    def forward(self, x, t, y=None, low_res=None):  # long: the whole UNet in one readable walk
        sp, C = self.spec, self.spec["C"]
        if low_res is not None:
            x = torch.cat([x, F.interpolate(low_res, x.shape[-2:], mode="bilinear")], dim=1)
        half = C // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]  # in float32, as guided-diffusion's timestep_embedding
        temb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(x.dtype)
        emb = self.linear("time_embed.2", F.silu(self.linear("time_embed.0", temb, C, 4 * C)), 4 * C, 4 * C)
        if sp["classes"]:
            emb = emb + self.p("label_emb.weight", 1000, 4 * C)[y]
        mults, nrb, attn_ds = sp["mult"], sp["nrb"], sp["attn_ds"]
        h = self.conv("input_blocks.0.0", x, x.shape[1], C)
        hs, k, ds, ch = [h], 1, 1, C
        for level, m in enumerate(mults):
            for _ in range(nrb):
                h = self.resblock(f"input_blocks.{k}.0", h, emb, ch, m * C)
                ch = m * C
                if ds in attn_ds:
                    h = self.attention(f"input_blocks.{k}.1", h, ch, self.heads(ch))
                hs.append(h)
                k += 1
            if level != len(mults) - 1:
                if sp["updown"]:
                    h = self.resblock(f"input_blocks.{k}.0", h, emb, ch, ch, down=True)
                else:
                    h = self.conv(f"input_blocks.{k}.0.op", h, ch, ch, stride=2)
                hs.append(h)
                k, ds = k + 1, ds * 2
        h = self.resblock("middle_block.0", h, emb, ch, ch)
        h = self.attention("middle_block.1", h, ch, self.heads(ch))
        h = self.resblock("middle_block.2", h, emb, ch, ch)
        k = 0
        for level, m in reversed(list(enumerate(mults))):
            for i in range(nrb + 1):
                h = torch.cat([h, hs.pop()], dim=1)
                h = self.resblock(f"output_blocks.{k}.0", h, emb, h.shape[1], m * C)
                ch, j = m * C, 1
                if ds in attn_ds:
                    h = self.attention(f"output_blocks.{k}.1", h, ch, self.heads(ch, up=True))
                    j = 2
                if level and i == nrb:
                    if sp["updown"]:
                        h = self.resblock(f"output_blocks.{k}.{j}", h, emb, ch, ch, up=True)
                    else:
                        h = self.conv(f"output_blocks.{k}.{j}.conv", F.interpolate(h, scale_factor=2, mode="nearest"), ch, ch)
                    ds //= 2
                k += 1
        return self.conv("out.2", F.silu(self.norm("out.0", h, ch)), C, sp["out"])


# each preset's architecture family at small width: (flags, the reference's own reading of them)
FAMILIES = {
    "celeba-like": ("--image_size 32 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2,2 "
                    "--attention_resolutions 16,8 --num_head_channels 16 --resblock_updown True "
                    "--use_new_attention_order True --use_scale_shift_norm True --learn_sigma True "
                    "--noise_schedule cosine --dropout 0.1 --use_fp16 True",
                    dict(C=32, mult=(1, 2, 2), nrb=1, attn_ds=(2, 4), head_channels=16, updown=True, new_order=True,
                         ss=True, classes=False, out=6, size=32, cin=3)),
    "bedroom-like": ("--image_size 32 --num_channels 32 --num_res_blocks 2 --channel_mult 1,1,2 "
                     "--attention_resolutions 8 --num_head_channels 16 --resblock_updown True --use_fp16 True "
                     "--use_scale_shift_norm True --learn_sigma True --noise_schedule linear",
                     dict(C=32, mult=(1, 1, 2), nrb=2, attn_ds=(4,), head_channels=16, updown=True, new_order=False,
                          ss=True, classes=False, out=6, size=32, cin=3)),
    "imagenet-like": ("--image_size 32 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 --class_cond True "
                      "--attention_resolutions 16 --num_heads 2 --resblock_updown False "
                      "--use_scale_shift_norm False --learn_sigma False",
                      dict(C=32, mult=(1, 2), nrb=1, attn_ds=(2,), heads=2, updown=False, new_order=False, ss=False,
                           classes=True, out=3, size=32, cin=3)),
    "upsampler-like": ("--large_size 64 --small_size 16 --num_channels 32 --num_res_blocks 1 --class_cond True "
                       "--attention_resolutions 16,8 --num_heads 2 --resblock_updown True --use_scale_shift_norm True "
                       "--learn_sigma True --noise_schedule linear --use_fp16 True",
                       dict(C=32, mult=(1, 2, 3, 4), nrb=1, attn_ds=(4, 8), heads=2, updown=True, new_order=False,
                            ss=True, classes=True, out=6, size=64, cin=6, small=16)),
}


def _inputs(spec, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, spec["size"], spec["size"], generator=g, dtype=torch.float64)
    t = torch.tensor([3, 731])
    y = torch.tensor([7, 993]) if spec["classes"] else None
    low = torch.rand(2, 3, spec["small"], spec["small"], generator=g, dtype=torch.float64) * 2 - 1 if spec.get("small") else None
    return x, t, y, low


@pytest.fixture(scope="module", params=list(FAMILIES))
def converted(request, tmp_path_factory):
    """(family, flags, spec, state dict, converted folder) with the checkpoint saved as fp16 where use_fp16."""
    flags, spec = FAMILIES[request.param]
    ref = ADMRef(spec)
    ref.forward(*_inputs(spec))  # creates the state dict
    dtype = torch.float16 if "use_fp16 True" in flags else torch.float32
    state = {k: v.to(dtype) for k, v in ref.s.items()}
    root = tmp_path_factory.mktemp(request.param)
    torch.save(state, root / "model.pt")
    folder = convert_adm(root / "model.pt", root / "converted", parse_flags(flags))
    return request.param, flags, spec, state, folder


def test_converted_unet_equals_independent_adm_forward(converted):
    name, flags, spec, state, folder = converted
    comps = load_components(str(folder))
    unet = comps.unet.double()
    x, t, y, low = _inputs(spec, seed=2)
    ref = ADMRef(spec, {k: v.double() for k, v in state.items()})
    want = ref.forward(x, t, y, low)
    assert sorted(ref.used) == sorted(state), "the reference must consume every checkpoint tensor exactly once"
    assert len(ref.used) == len(set(ref.used))
    inp = x if low is None else torch.cat([x, F.interpolate(low, x.shape[-2:], mode="bilinear")], dim=1)
    with torch.no_grad():
        got = unet(inp, t, class_labels=y).sample
    assert got.shape == (2, spec["out"], spec["size"], spec["size"]) and torch.isfinite(got).all()
    assert want.abs().max() > 0.1  # a non-trivial output
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)
    # float32 as loaded: the same up to float32 rounding
    with torch.no_grad():
        got32 = load_components(str(folder)).unet(inp.float(), t, class_labels=y).sample
    torch.testing.assert_close(got32.double(), want, atol=1e-4 * float(want.abs().max()), rtol=1e-4)


def test_converted_folder_layout_and_scheduler(converted):
    name, flags, spec, state, folder = converted
    index = json.loads((folder / "model_index.json").read_text())
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and index["scheduler"] == ["diffusers", "DDPMScheduler"]
    # a fixed head count over attention layers of different widths is not one UNet2DModel attention_head_dim
    assert index["unet"][1] == ("ADMUNet2DModel" if name == "upsampler-like" else "UNet2DModel")
    assert unet_cfg["in_channels"] == spec["cin"] and unet_cfg["out_channels"] == spec["out"]
    assert unet_cfg["num_class_embeds"] == (1000 if spec["classes"] else None)
    assert unet_cfg["resnet_time_scale_shift"] == ("scale_shift" if spec["ss"] else "default")
    assert sched["variance_type"] == ("learned_range" if spec["out"] == 6 else "fixed_large")
    # betas: the closed forms (guided-diffusion's linear 1e-4..0.02 scaled by 1000/T; cosine with s = 0.008)
    T = 1000
    if "cosine" in flags:
        f = lambda s: math.cos((s / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        want = np.minimum([1 - f(i + 1) / f(i) for i in range(T)], 0.999)
    else:
        want = np.linspace(1e-4, 0.02, T)
    np.testing.assert_allclose(sched["trained_betas"], want, rtol=1e-12, atol=0)
    comps = load_components(str(folder))
    np.testing.assert_allclose(comps.denoiser().alphas_cumprod.numpy(), np.cumprod(1 - want), rtol=1e-12)
    np.testing.assert_allclose(comps.scheduler.alphas_cumprod.double().numpy(), np.cumprod(1 - want), rtol=2e-5)
    if spec.get("small"):
        assert index["low_res_conditioning"] == {"channels": 3, "size": spec["small"], "interpolation": "bilinear"}
        assert comps.denoiser().in_channels == 3 and comps.denoiser().learned_variance


def test_wrong_flags_name_first_mismatching_tensor(folders, tmp_path, capsys):
    folder, _, state = folders["celeba-like"]
    flags, ckpt = FAMILIES["celeba-like"][0], folder.parent / "m.pt"
    wrong = flags.replace("--num_channels 32", "--num_channels 64")
    code = main(["convert", "adm", str(ckpt), "--out", str(tmp_path / "w"), "--flags", wrong])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "time_embed.0.weight" in err and "(256, 64)" in err and "(128, 32)" in err
    with pytest.raises(MinorityError, match="output_blocks.*skip_connection|not part of"):  # fewer levels
        convert_adm(ckpt, tmp_path / "w2", parse_flags(flags.replace("--channel_mult 1,2,2", "--channel_mult 1,2")))
    with pytest.raises(MinorityError, match="lacks .* label_emb.weight"):
        convert_adm(ckpt, tmp_path / "w3", parse_flags(flags + " --class_cond True"))
    extra = dict(state, stray=torch.zeros(2))
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(MinorityError, match="stray .*not part of"):
        convert_adm(tmp_path / "extra.pt", tmp_path / "w4", parse_flags(flags))
    assert not (tmp_path / "w").exists()


# the paper's four models at full size, read from their published flags by the reference (shapes only)
FULL = {
    "celeba64": dict(C=192, mult=(1, 2, 3, 4), nrb=3, attn_ds=(2, 4, 8), head_channels=64, updown=True,
                     new_order=True, ss=True, classes=False, out=6, size=64, cin=3),
    "imagenet64": dict(C=192, mult=(1, 2, 3, 4), nrb=3, attn_ds=(2, 4, 8), head_channels=64, updown=True,
                       new_order=True, ss=True, classes=True, out=6, size=64, cin=3),
    "lsun-bedroom256": dict(C=256, mult=(1, 1, 2, 2, 4, 4), nrb=2, attn_ds=(8, 16, 32), head_channels=64,
                            updown=True, new_order=False, ss=True, classes=False, out=6, size=256, cin=3),
    "imagenet64-256-upsampler": dict(C=192, mult=(1, 1, 2, 2, 4, 4), nrb=2, attn_ds=(8, 16, 32), heads=4,
                                     updown=True, new_order=False, ss=True, classes=True, out=6, size=256, cin=6,
                                     small=64),
}


@pytest.mark.parametrize("preset", list(FULL))
def test_presets_full_size_layout(preset):
    """Every tensor the reference ADM of the published flags reads has the shape the converter expects, and the
    converter consumes all of them (meta tensors: no memory)."""
    spec = FULL[preset]
    ref = ADMRef(spec, meta=True)
    s = spec["size"]
    x = torch.empty(1, 3, s, s, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta") if spec["classes"] else None
    low = torch.empty(1, 3, spec["small"], spec["small"], device="meta") if spec.get("small") else None
    out = ref.forward(x, torch.zeros(1, device="meta"), y, low)
    assert out.shape == (1, 6, s, s)
    converted = convert_state_dict(ref.s, parse_flags(PRESETS[preset]))
    assert len(converted) == sum(3 if ".qkv." in k else 1 for k in ref.s)


def test_flags_parse_as_guided_diffusion_argparse():
    f = parse_flags(PRESETS["celeba64"])
    assert (f.image_size, f.num_channels, f.num_head_channels, f.num_res_blocks) == (64, 192, 64, 3)
    assert f.mults == (1, 2, 3, 4) and f.attention_ds == (2, 4, 8) and f.use_new_attention_order
    b = parse_flags(PRESETS["lsun-bedroom256"])
    assert b.mults == (1, 1, 2, 2, 4, 4) and not b.use_new_attention_order and b.attention_ds == (8, 16, 32)
    u = parse_flags(PRESETS["imagenet64-256-upsampler"])
    assert u.super_res and u.image_size == 256 and u.small_size == 64 and u.num_heads == 4
    assert parse_flags("--image_size 64 --class_cond yes --learn_sigma 1").class_cond  # str2bool, defaults
    assert parse_flags("--image_size 64 --num_chan 64").num_channels == 64  # argparse prefixes
    assert parse_flags("--image_size 64 --batch_size 4 --timestep_respacing 250").timestep_respacing == "250"
    assert [respaced_steps(r) for r in ("250", "ddim25", "", "10,20")] == [250, 25, None, None]
    for bad, msg in [("--image_size 64 --bogus 3", "unrecognized"), ("--class_cond maybe", "boolean"),
                     ("--image_size 48", "channel_mult"), ("--large_size 256 --use_new_attention_order True", "unrecognized")]:
        with pytest.raises(MinorityError, match=msg):
            parse_flags(bad)


def test_pickle_with_objects_refused(tmp_path):
    torch.save({"w": torch.zeros(1), "args": argparse.Namespace(lr=1e-4)}, tmp_path / "bad.pt")  # a training script's
    with pytest.raises(MinorityError, match="weights-only loading refuses"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"step": 3}, tmp_path / "nontensor.pt")
    with pytest.raises(MinorityError, match="not a state dict of tensors"):
        load_checkpoint(tmp_path / "nontensor.pt")


# -- the converted folders through the project's pipelines ------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Converted folders of the celeba-like, imagenet-like and upsampler-like families (float32 checkpoints)."""
    out = {}
    for name in ("celeba-like", "imagenet-like", "upsampler-like"):
        flags, spec = FAMILIES[name]
        ref = ADMRef(spec, seed=3)
        ref.forward(*_inputs(spec))
        root = tmp_path_factory.mktemp(f"gen-{name}")
        torch.save({k: v.float() for k, v in ref.s.items()}, root / "m.pt")
        assert main(["convert", "adm", str(root / "m.pt"), "--out", str(root / "f"), "--flags", flags]) == 0
        out[name] = (root / "f", spec, ref.s)
    return out


@pytest.mark.parametrize("method", ["ancestral", "sgms"])
def test_converted_folder_generates(folders, tmp_path, method):
    extra = ["--guide-every", "2", "--distance", "l2"] if method == "sgms" else []
    for name, label in (("celeba-like", []), ("imagenet-like", ["--class-label", "5"])):
        folder, spec, _ = folders[name]
        out = tmp_path / name
        code = main(["generate", "--model", str(folder), "--method", method, "--steps", "4", "--seeds", "0-1",
                     *label, "--out", str(out), *extra])
        assert code == 0
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(r["method"] == method for r in rows)
        arr = np.asarray(Image.open(out / rows[0]["file"]))
        assert arr.shape == (spec["size"], spec["size"], 3) and np.isfinite(arr).all()


def _ref_ancestral(ref: ADMRef, pairs, abar, z, y, low, gens):
    """guided-diffusion's p_sample loop (learned-range variance, clipped x̂0) on the given (t, t_next) grid."""
    from minority.core.rng import randn_per_sample

    for t, tn in pairs:
        a, an = float(abar[t]), (float(abar[tn]) if tn >= 0 else 1.0)
        out = ref.forward(z, torch.tensor([t] * z.shape[0]), y, low)
        eps, v = out[:, :3], out[:, 3:]
        x0 = ((z - (1 - a) ** 0.5 * eps) / a**0.5).clamp(-1, 1)
        beta = 1 - a / an
        mean = (an**0.5 * beta / (1 - a)) * x0 + ((1 - beta) ** 0.5 * (1 - an) / (1 - a)) * z
        if t == 0:  # no noise on the last step
            return mean
        log_var = (v + 1) / 2 * math.log(beta) + (1 - (v + 1) / 2) * math.log(beta * (1 - an) / (1 - a))
        z = mean + torch.exp(0.5 * log_var) * randn_per_sample(gens, z.shape[1:]).double()
    return z


def test_upsample_command_equals_guided_diffusion_super_res_sampling(folders, tmp_path):
    from minority.core.rng import make_generators, randn_per_sample
    from minority.pipelines.pixel import PixelPipeline

    folder, spec, state = folders["upsampler-like"]
    src = tmp_path / "in64"
    (src / "images").mkdir(parents=True)
    g = torch.Generator().manual_seed(5)
    rows = []
    for k, (label, seed) in enumerate([(7, 11), (993, 12), (42, 13)]):
        px = (torch.rand(16, 16, 3, generator=g) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(px).save(src / "images" / f"{k:05d}_{seed:06d}.png")
        rows.append({"file": f"images/{k:05d}_{seed:06d}.png", "class_label": label, "seed": seed, "prompt_index": k})
    (src / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "up"
    assert main(["upsample", "--images", str(src), "--model", str(folder), "--steps", "3", "--batch-size", "2",
                 "--out", str(out)]) == 0
    got = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["class_label"], r["seed"]) for r in got] == [(7, 11), (993, 12), (42, 13)]
    img = np.asarray(Image.open(out / got[1]["file"]), dtype=np.float64)
    assert img.shape == (64, 64, 3)
    # the same image from guided-diffusion's formulas with the reference network (it upsamples low_res itself)
    pipe = PixelPipeline(load_components(str(folder)))
    pairs = pipe.plan([993], "ancestral", {}, steps=3).pairs
    low = torch.from_numpy(np.asarray(Image.open(src / rows[1]["file"]), dtype=np.float64) / 127.5 - 1).permute(2, 0, 1)[None]
    gens = make_generators([12])
    z = randn_per_sample(gens, (3, 64, 64)).double()
    ref = ADMRef(spec, {k: v.double() for k, v in state.items()})
    want = _ref_ancestral(ref, pairs, pipe.denoiser.alphas_cumprod, z, torch.tensor([993]), low, gens)
    want = ((want[0].permute(1, 2, 0).clamp(-1, 1) / 2 + 0.5) * 255).round().numpy()
    assert np.abs(img - want).max() <= 1  # uint8 rounding of a float32 vs float64 run
    # --spacing adm: guided-diffusion's respaced grid (the SGMS paper's runs), recorded in the manifest
    assert main(["upsample", "--images", str(src), "--model", str(folder), "--steps", "3", "--spacing", "adm",
                 "--out", str(tmp_path / "up-adm")]) == 0
    adm = [json.loads(line) for line in (tmp_path / "up-adm" / "manifest.jsonl").read_text().splitlines()]
    assert all(r["spacing"] == "adm" for r in adm) and all(r["spacing"] == "scheduler" for r in got)
    adm_pairs = pipe.plan([993], "ancestral", {}, steps=3, spacing="adm").pairs
    assert [t for t, _ in adm_pairs] != [t for t, _ in pairs]
    gens = make_generators([12])  # the initial noise, then the ancestral noises, from the image's one generator
    z = randn_per_sample(gens, (3, 64, 64)).double()
    want = _ref_ancestral(ref, adm_pairs, pipe.denoiser.alphas_cumprod, z, torch.tensor([993]), low, gens)
    img = np.asarray(Image.open(tmp_path / "up-adm" / adm[1]["file"]), dtype=np.float64)
    assert np.abs(img - ((want[0].permute(1, 2, 0).clamp(-1, 1) / 2 + 0.5) * 255).round().numpy()).max() <= 1


def test_upsampler_needs_low_res_and_generate_refuses(folders, tmp_path, capsys):
    folder, _, _ = folders["upsampler-like"]
    code = main(["generate", "--model", str(folder), "--class-label", "3", "--steps", "2", "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert code == 2 and "super-resolution" in err and "minority upsample" in err
    celeba, _, _ = folders["celeba-like"]
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    code = main(["upsample", "--images", str(tmp_path / "imgs"), "--model", str(celeba), "--out", str(tmp_path / "u")])
    assert code == 2 and "not a super-resolution model" in capsys.readouterr().err
    code = main(["upsample", "--images", str(tmp_path / "imgs"), "--model", str(folder), "--out", str(tmp_path / "u")])
    assert code == 2 and "--class-label" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["celeba64", "imagenet64-256-upsampler"])
def test_full_size_forward_equals_reference(preset):
    """The paper's architectures at full size with random weights (float64; CUDA when available): the converted
    diffusers model equals the reference ADM forward."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    spec = FULL[preset]
    ref = ADMRef(spec, seed=4)
    s, g = spec["size"], torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, s, s, generator=g, dtype=torch.float64)
    low = torch.rand(1, 3, spec["small"], spec["small"], generator=g, dtype=torch.float64) * 2 - 1 if spec.get("small") else None
    y = torch.tensor([281]) if spec["classes"] else None
    t = torch.tensor([600])
    ref.forward(x, t, y, low)  # creates the state dict (and runs once on the CPU)
    ref.s = {k: v.to(dev) for k, v in ref.s.items()}
    ref.used = []
    with torch.no_grad():
        want = ref.forward(x.to(dev), t.to(dev), None if y is None else y.to(dev), None if low is None else low.to(dev))
        model = target_model_real(parse_flags(PRESETS[preset]))
        model.load_state_dict(convert_state_dict(ref.s, parse_flags(PRESETS[preset]), torch.float64), strict=True)
        model.to(dev)
        inp = x if low is None else torch.cat([x, F.interpolate(low, (s, s), mode="bilinear")], dim=1)
        got = model(inp.to(dev), t.to(dev), class_labels=None if y is None else y.to(dev)).sample
    torch.testing.assert_close(got, want, atol=1e-8 * float(want.abs().max()), rtol=1e-8)


def target_model_real(flags):
    from diffusers import UNet2DModel

    from minority.nets.adm import ADMUNet2DModel
    from minority.pipelines.adm.layout import unet_config

    name, cfg = unet_config(flags)
    return (ADMUNet2DModel if name == "ADMUNet2DModel" else UNet2DModel)(**cfg).double().eval()


def test_score_refuses_super_resolution_model(folders, tmp_path, capsys):
    folder, _, _ = folders["upsampler-like"]
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    code = main(["score", "--images", str(tmp_path / "imgs"), "--model", str(folder), "--out", str(tmp_path / "s.csv")])
    assert code == 2 and "super-resolution" in capsys.readouterr().err


def test_pixel_pipeline_low_res_argument(folders):
    from minority.pipelines.pixel import PixelPipeline

    folder, _, _ = folders["upsampler-like"]
    pipe = PixelPipeline.from_pretrained(str(folder))
    low = torch.rand(2, 3, 16, 16) * 2 - 1
    out = pipe(class_labels=5, low_res=low, num_inference_steps=2, output_type="pt", seeds=[0, 1])
    assert out.images.shape == (2, 3, 64, 64) and out.settings["unet_calls"] == 2
    with pytest.raises(MinorityError, match=r"low_res must have shape \(2, 3, 16, 16\)"):
        pipe(class_labels=[5, 6], low_res=torch.zeros(2, 3, 32, 32), num_inference_steps=2)
    with pytest.raises(MinorityError, match="needs low-resolution images"):
        pipe(class_labels=[5], num_inference_steps=2)
    celeba, _, _ = folders["celeba-like"]
    with pytest.raises(MinorityError, match="takes no conditioning images"):
        PixelPipeline.from_pretrained(str(celeba))(num_images=1, low_res=low[:1], num_inference_steps=2)
