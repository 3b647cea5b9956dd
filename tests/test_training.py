"""Losses (SSIM against scikit-image, exact MAE/MSE) and the shared training driver (schedule,
early stop, checkpoints and exact resume, pre-training, normalisation helpers)."""
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from xrdwidgets import jobs
from xrdwidgets.recon import losses
from xrdwidgets.base.progress import run_to_end
from xrdwidgets.recon.nets import build_generator
from xrdwidgets.recon.training import (
    CHECKPOINT_FORMAT,
    ChannelScaling,
    TrainResult,
    train,
)


# ---------------------------------------------------------------------------- losses
def _images(seed=0, shape=(24, 20)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    a = np.sin(yy / 3.0) + np.cos(xx / 4.0) + 0.2 * rng.random(shape)
    b = a + 0.15 * rng.standard_normal(shape)
    return a, b


def test_ssim_of_identical_images_is_one():
    a, _ = _images()
    t = torch.tensor(a)
    assert float(losses.ssim(t, t)) == pytest.approx(1.0, abs=1e-12)
    batch = torch.tensor(np.stack([a, 2 * a, np.zeros_like(a)], -1))
    assert torch.allclose(losses.ssim_per_channel(batch, batch), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_scikit_image(seed):
    a, b = _images(seed)
    for rng in (None, 3.0):
        ref = structural_similarity(a, b, data_range=rng if rng else a.max() - a.min(), gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False)
        got = float(losses.ssim(torch.tensor(b, dtype=torch.float32), torch.tensor(a, dtype=torch.float32),
                                data_range=rng))
        assert got == pytest.approx(ref, abs=1e-3)
    # a channel batch is the mean of the channels' SSIM
    a2, b2 = _images(seed + 10)
    per = [structural_similarity(x, y, data_range=x.max() - x.min(), gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False) for x, y in ((a, b), (a2, b2))]
    got = losses.ssim_per_channel(torch.tensor(np.stack([b, b2], -1)), torch.tensor(np.stack([a, a2], -1)))
    assert np.allclose(got.numpy(), per, atol=1e-6)
    assert float(losses.ssim(torch.tensor(np.stack([b, b2], -1)), torch.tensor(np.stack([a, a2], -1)))) == \
        pytest.approx(np.mean(per), abs=1e-6)


def test_ssim_small_images_use_a_smaller_window_and_stay_differentiable():
    a = torch.rand(6, 9, 2, dtype=torch.float64, requires_grad=True)
    b = torch.rand(6, 9, 2, dtype=torch.float64)
    s = losses.ssim(a, b)
    s.backward()
    assert math.isfinite(float(s.detach())) and a.grad is not None


def test_mae_mse_exact_and_combinations():
    p = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[1.0, 0.0], [5.0, 4.0]])
    assert float(losses.mae(p, t)) == 1.0          # (0 + 2 + 2 + 0) / 4
    assert float(losses.mse(p, t)) == 2.0          # (0 + 4 + 4 + 0) / 4
    a, b = (torch.tensor(x, dtype=torch.float64) for x in _images())
    s = float(losses.ssim(a, b))
    assert float(losses.mae_ssim(a, b)) == pytest.approx(0.16 * float(losses.mae(a, b)) + 0.84 * (1 - s))
    assert float(losses.mse_ssim(a, b)) == pytest.approx(1e-4 * float(losses.mse(a, b)) + (1 - 1e-4) * (1 - s))
    assert float(losses.get_loss("mae_ssim", mu=0.5)(a, b)) == pytest.approx(
        0.5 * float(losses.mae(a, b)) + 0.5 * (1 - s))
    assert losses.get_loss("MSE") is losses.mse
    assert float(losses.get_loss("ssim")(a, a)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.mae(torch.zeros(3, 3), torch.zeros(3, 4)), r"shape \(3, 3\) but target has shape \(3, 4\)"),
    (lambda: losses.ssim(torch.zeros(3), torch.zeros(3)), r"\(h, w\) or \(h, w, C\)"),
    (lambda: losses.ssim(torch.zeros(8, 8), torch.zeros(8, 8), data_range=0.0), "data_range"),
    (lambda: losses.mse(np.zeros((3, 3)), torch.zeros(3, 3)), "torch tensors"),
    (lambda: losses.get_loss("huber"), "loss must be one of"),
])
def test_loss_bad_inputs(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ---------------------------------------------------------------------------- normalisation
def test_channel_scaling_round_trip_and_zero_channel():
    b = torch.rand(10, 6, 3) * torch.tensor([5.0, 0.5, 0.0])
    sc = ChannelScaling.from_sinogram(b, gain=torch.tensor([0.1, 0.2, 0.3]))
    bn = sc.normalise_sino(b)
    assert torch.allclose(bn[..., :2].amax((0, 1)), torch.ones(2))
    assert float(sc.sino[2]) == 1.0 and bool(torch.isfinite(bn).all())
    assert torch.allclose(sc.image, sc.sino * torch.tensor([0.1, 0.2, 0.3]))
    x = torch.rand(4, 4, 3)
    assert torch.allclose(sc.denormalise_image(sc.normalise_image(x)), x)
    assert torch.allclose(sc.denormalise_sino(bn), b)
    with pytest.raises(ValueError, match="gain"):
        ChannelScaling.from_sinogram(b, gain=[1.0, -1.0, 1.0])


# ---------------------------------------------------------------------------- driver
def _model(seed=0):
    return build_generator("sd2iu", 8, 2, k=2, seed=seed, device="cpu", filters=4, dense_units=8)


def _target():
    g = torch.Generator().manual_seed(5)
    return torch.rand(8, 8, 2, generator=g)


def _loss(out):
    return losses.mae_ssim(out, _target())


def _run(**kw):
    evs = []
    res = run_to_end(train(_model(), _loss, **{"preview_every": 0, **kw}), evs.append)
    return res, evs


def test_training_lowers_the_loss_and_reports_progress():
    res, evs = _run(max_epochs=60, lr=1e-2, preview_every=20)
    assert isinstance(res, TrainResult)
    assert res.output.shape == (8, 8, 2) and res.epochs == 60 and res.stop_reason == "max_epochs"
    assert len(res.losses) == 60 and res.best_loss == min(res.losses)
    assert res.losses[-1] < 0.8 * res.losses[0]
    assert [e.iteration for e in evs] == list(range(1, 61)) and evs[0].total == 60
    assert evs[-1].metrics["phase"] == "train" and evs[-1].metrics["lr"] == 1e-2
    assert [e.iteration for e in evs if e.preview is not None] == [20, 40, 60]
    assert evs[19].preview.shape == (8, 8)
    assert float(_loss(res.output)) == pytest.approx(res.best_loss, rel=1e-5)   # the best output


def test_seeded_runs_are_reproducible():
    a, _ = _run(max_epochs=15, seed=1)
    b, _ = _run(max_epochs=15, seed=1)
    assert a.losses == b.losses and torch.equal(a.output, b.output)


def _constant_loss(out):
    return out.sum() * 0.0 + 1.0


def test_scheduler_halves_lr_after_patience_and_stops_at_the_floor():
    evs = []
    res = run_to_end(train(_model(), _constant_loss, lr=1e-3, patience=3, min_lr=3e-4, max_epochs=100,
                           preview_every=0), evs.append)
    lrs = [e.metrics["lr"] for e in evs]
    # epoch 1 sets the best; epochs 2-5 do not improve: the 4th bad epoch (> patience) halves
    assert lrs[:5] == [1e-3] * 5 and lrs[5:9] == [5e-4] * 4
    assert res.stop_reason == "min_lr" and res.epochs == 9 and len(evs) == 9
    assert evs[-1].preview is not None          # the last event always carries a preview


def test_checkpoint_resume_gives_the_same_continuation(tmp_path):
    full, ev_full = _run(max_epochs=20, seed=2, lr=5e-3, patience=2)
    first = train(_model(), _loss, max_epochs=20, seed=2, lr=5e-3, patience=2, checkpoint_every=10,
                  preview_every=0)
    ck = None
    for ev in first:
        if "checkpoint" in ev.metrics:
            ck = ev.metrics["checkpoint"]
            break
    first.close()
    assert ck["format"] == CHECKPOINT_FORMAT and ck["epoch"] == 10 and ck["phase"] == "train"
    path = tmp_path / "ck.pt"
    torch.save(ck, path)
    loaded = torch.load(path, weights_only=False)
    other = build_generator("sd2iu", 8, 2, k=2, seed=99, device="cpu", filters=4, dense_units=8)
    ev_res = []
    res = run_to_end(train(other, _loss, max_epochs=20, lr=5e-3, patience=2, checkpoint=loaded,
                           preview_every=0), ev_res.append)
    assert [e.iteration for e in ev_res] == list(range(11, 21))
    assert np.allclose([e.loss for e in ev_res], full.losses[10:], rtol=1e-6, atol=1e-7)
    assert np.allclose(res.losses, full.losses, rtol=1e-6, atol=1e-7)
    assert [e.metrics["lr"] for e in ev_res] == [e.metrics["lr"] for e in ev_full[10:]]
    for (k, p), q in zip(full.model.state_dict().items(), res.model.state_dict().values()):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7), k
    assert torch.allclose(res.output, full.output, atol=1e-6)


def test_closing_writes_the_checkpoint_path_and_resumes(tmp_path):
    path = tmp_path / "sub" / "state.pt"
    full, _ = _run(max_epochs=12, seed=3, pretrain_target=_target() * 0.5, pretrain_epochs=4)
    gen = train(_model(), _loss, max_epochs=12, seed=3, pretrain_target=_target() * 0.5, pretrain_epochs=4,
                checkpoint_path=path, checkpoint_extra={"who": "test"}, preview_every=0)
    evs = [next(gen) for _ in range(7)]           # 4 pre-training + 3 training epochs
    assert [e.metrics["phase"] for e in evs] == ["pretrain"] * 4 + ["train"] * 3
    assert not path.exists()
    gen.close()                                   # a cancelled job
    ck = torch.load(path, weights_only=False)
    assert (ck["phase"], ck["epoch"], ck["who"]) == ("train", 3, "test")
    evs2 = []
    res = run_to_end(train(_model(seed=7), _loss, max_epochs=12, pretrain_target=_target() * 0.5,
                           pretrain_epochs=4, checkpoint=ck, preview_every=0), evs2.append)
    assert [e.iteration for e in evs2] == list(range(8, 17))
    assert np.allclose(res.losses, full.losses, rtol=1e-6, atol=1e-7)


def test_pretraining_fits_the_target_first():
    target = _target() * torch.tensor([1.0, 0.5])
    evs = []
    run_to_end(train(_model(), _loss, max_epochs=2, pretrain_target=target, pretrain_epochs=40, lr=1e-2,
                     preview_every=0), evs.append)
    pre = [e for e in evs if e.metrics["phase"] == "pretrain"]
    assert len(pre) == 40 and pre[-1].loss < 0.5 * pre[0].loss and evs[0].total == 42
    with pytest.raises(ValueError, match=r"pretrain_target has shape \(3, 3\)"):
        run_to_end(train(_model(), _loss, max_epochs=2, pretrain_target=torch.zeros(3, 3), pretrain_epochs=2))


def test_job_writes_checkpoints_and_amp_compile_flags_are_safe_on_cpu(tmp_path):
    ref, _ = _run(max_epochs=6, seed=4)
    job = jobs.run(lambda: train(_model(), _loss, max_epochs=6, seed=4, checkpoint_every=3, amp=True,
                                 compile=True, preview_every=0), name="train", workdir=tmp_path,
                   save_result=lambda r, p: None)
    job.wait(timeout=60)
    ck = jobs.load_checkpoint(tmp_path)
    assert ck is not None and ck["epoch"] == 3           # none at the last epoch: the result follows
    if not torch.cuda.is_available():              # the flags act on CUDA only
        assert job.result.losses == ref.losses


@pytest.mark.parametrize("kw, match", [
    ({"lr": 0.0}, "lr must be"),
    ({"max_epochs": 0}, "max_epochs must be an integer >= 1"),
    ({"factor": 1.5}, "factor must be"),
    ({"min_lr": -1.0}, "min_lr"),
    ({"checkpoint": {"format": "other"}}, "not a training checkpoint"),
    ({"checkpoint": [1]}, "checkpoint must be a dict"),
    ({"preview_fn": 3}, "preview_fn must be callable"),
    ({"pretrain_target": np.zeros((8, 8, 2))}, "pretrain_target must be a torch tensor"),
])
def test_train_bad_arguments_are_named(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        train(_model(), _loss, **kw)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        train(_model(), "mae")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        train(lambda: None, _loss)


def test_bad_loss_values_are_reported():
    with pytest.raises(ValueError, match="scalar tensor"):
        run_to_end(train(_model(), lambda out: out, max_epochs=2))
    with pytest.raises(FloatingPointError, match="epoch 1"):
        run_to_end(train(_model(), lambda out: out.sum() * float("nan"), max_epochs=2))
    other = build_generator("sd2iu", 12, 1, k=2, seed=0, device="cpu", filters=4)
    _, evs = _run(max_epochs=2, checkpoint_every=1)
    with pytest.raises(ValueError, match="checkpoint does not fit the model"):
        run_to_end(train(other, lambda o: o.mean(), max_epochs=3, checkpoint=evs[0].metrics["checkpoint"]))
