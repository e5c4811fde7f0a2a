from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from minority.errors import MinorityError
from minority.training.checkpoint import Run
from minority.training.common import EMA, batch_indices, config_from_dict, warmup_cosine


def test_batch_indices_cover_each_epoch_once():
    n, b = 50, 10
    epoch0 = torch.cat([batch_indices(n, b, seed=1, step=s) for s in range(5)])
    assert sorted(epoch0.tolist()) == list(range(n))
    assert torch.equal(batch_indices(n, b, 1, 7), batch_indices(n, b, 1, 7))
    assert not torch.equal(batch_indices(n, b, 1, 0), batch_indices(n, b, 1, 5))


def test_warmup_cosine():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 10, final_fraction=0.1) == pytest.approx(0.1)


def test_ema_tracks_weights():
    m = torch.nn.Linear(2, 2)
    ema = EMA(m, decay=0.5, warmup=1)
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    target = torch.nn.Linear(2, 2)
    ema.copy_to(target)
    assert not torch.equal(target.weight, m.weight)


@dataclass(frozen=True)
class _Inner:
    sizes: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class _Cfg:
    seed: int = 0
    lr: float = 0.1
    inner: _Inner = field(default_factory=_Inner)


def test_config_from_dict_nested():
    import dataclasses

    cfg = _Cfg(seed=3, inner=_Inner((4, 5)))
    assert config_from_dict(_Cfg, dataclasses.asdict(cfg)) == cfg


def _make_run(path, resume):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    run = Run(path, _Cfg(), resume=resume, log_every=1)
    run.add_module("m", model)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    run.add_optimizer("m", opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s)))
    ema = run.add_ema("m", EMA(model, 0.9, warmup=1))
    gen = run.add_generator("noise", torch.Generator().manual_seed(0))
    if resume:
        run.load()

    def step(i):
        x = torch.randn(16, 4, generator=gen)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.schedulers["m"].step()
        ema.update(model)
        return {"loss": loss.item()}

    return run, model, ema, step


def test_resume_is_exact(tmp_path):
    run, model, ema, step = _make_run(tmp_path / "a", resume=False)
    assert run.loop("p", 6, step)
    ref, ref_ema = model.state_dict(), ema.shadow
    run.close()

    run, _, _, step = _make_run(tmp_path / "b", resume=False)
    run.loop("p", 3, step)
    run.close()
    with pytest.raises(MinorityError, match="--resume"):
        _make_run(tmp_path / "b", resume=False)
    run, model, ema, step = _make_run(tmp_path / "b", resume=True)
    assert run.state["steps"]["p"] == 3
    assert run.loop("p", 6, step)
    for k, v in ref.items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
        torch.testing.assert_close(ema.shadow[k], ref_ema[k], rtol=0, atol=0)
    assert len(run.state["history"]["p"]) == 6
    assert run.plot_losses().is_file()
    run.close()


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(MinorityError, match="no checkpoint"):
        Run(tmp_path, _Cfg(), resume=True)


def test_random_shift_flip_and_grid(tmp_path):
    from PIL import Image

    from minority.training.common import random_shift_flip, save_grid

    x = torch.full((5, 1, 8, 8), -1.0)
    x[:, :, 3:5, 3:5] = 1.0
    y = random_shift_flip(x, torch.Generator().manual_seed(0), max_shift=2)
    assert y.shape == x.shape and (y == 1).sum() == (x == 1).sum()
    path = save_grid(y, tmp_path / "g.png", nrow=3)
    assert Image.open(path).size == (3 * 10, 2 * 10)
