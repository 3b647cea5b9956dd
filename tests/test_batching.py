"""Tests of channel batching with overlap (xrdwidgets.recon.batching)."""
import itertools

import numpy as np
import pytest
import torch

from xrdwidgets.recon.batching import (
    batch_weights,
    map_batches,
    merge_batches,
    plan_batches,
)


@pytest.mark.parametrize("M,B,O", [(460, 250, 40), (1000, 250, 40), (300, 250, 40), (251, 250, 40),
                                   (250, 250, 40), (17, 5, 2), (10, 3, 0), (7, 1, 0), (1, 4, 1)])
def test_plan_covers_with_overlap(M, B, O):
    sl = plan_batches(M, B, O)
    assert sl[0].start == 0 and sl[-1].stop == M
    sizes = {s.stop - s.start for s in sl}
    assert sizes == {min(B, M)}
    cover = np.zeros(M, int)
    for s in sl:
        cover[s] += 1
    assert cover.min() >= 1
    for a, b in itertools.pairwise(sl):
        assert a.start < b.start and b.start < a.stop + (O == 0)
        assert a.stop - b.start >= O          # overlap at least O
    if M > B:  # no more batches than needed at spacing B - O
        assert len(sl) == int(np.ceil((M - O) / (B - O)))


def test_plan_250_40():
    assert plan_batches(460, 250, 40) == [slice(0, 250), slice(210, 460)]
    assert plan_batches(100, 250, 40) == [slice(0, 100)]


@pytest.mark.parametrize("weights", ["linear", "mean"])
def test_identity_run_is_reconstructed_exactly(weights):
    rng = np.random.default_rng(0)
    data = rng.random((3, 4, 523))
    sl = plan_batches(523, 100, 17)
    out = merge_batches([data[..., s] for s in sl], sl, 523, weights=weights)
    np.testing.assert_allclose(out, data, rtol=0, atol=1e-12)
    # other axis, torch inputs, float32 kept
    d32 = torch.as_tensor(data.astype(np.float32)).permute(2, 0, 1)        # channel axis first
    out = merge_batches([d32[s] for s in sl], sl, 523, axis=0)
    assert out.dtype == np.float32 and out.shape == (523, 3, 4)
    np.testing.assert_allclose(out, d32.numpy(), rtol=1e-6)
    # map_batches: the same through a function
    seen = []

    def fn(x, s):
        seen.append(s)
        assert x.shape[-1] == s.stop - s.start
        return 2 * x

    np.testing.assert_allclose(map_batches(fn, data, 100, 17), 2 * data, rtol=1e-12)
    assert seen == sl


def test_linear_weights_cross_fade():
    sl = plan_batches(30, 20, 10)
    assert sl == [slice(0, 20), slice(10, 30)]
    w = batch_weights(sl, 30)
    np.testing.assert_allclose(w[0][:10], 1.0)                          # the axis start: no ramp
    np.testing.assert_allclose(w[0][10:], np.arange(10, 0, -1) / 11)   # ramps down towards its edge
    np.testing.assert_allclose(w[1][:10], np.arange(1, 11) / 11)
    np.testing.assert_allclose(w[0][10:] + w[1][:10], 1.0)              # a cross-fade: sums to 1
    # a batch that differs by a constant: the merge moves linearly from one to the other
    merged = merge_batches([np.zeros(20), np.ones(20)], sl, 30)
    np.testing.assert_allclose(merged[:10], 0.0)
    np.testing.assert_allclose(merged[10:20], np.arange(1, 11) / 11)
    np.testing.assert_allclose(merged[20:], 1.0)
    mean = merge_batches([np.zeros(20), np.ones(20)], sl, 30, weights="mean")
    np.testing.assert_allclose(mean[10:20], 0.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="overlap must be smaller"):
        plan_batches(100, 40, 40)
    with pytest.raises(ValueError, match="batch"):
        plan_batches(100, 0, 0)
    with pytest.raises(ValueError, match="n_channels"):
        plan_batches(0, 10, 2)
    with pytest.raises(ValueError, match="overlap"):
        plan_batches(100, 10, -1)
    with pytest.raises(ValueError, match="batch"):
        plan_batches(100, 2.5, 0)
    with pytest.raises(ValueError, match="batch"):
        plan_batches(100, True, 0)
    sl = [slice(0, 10), slice(12, 20)]
    with pytest.raises(ValueError, match="uncovered"):
        merge_batches([np.zeros(10), np.zeros(8)], sl, 20)
    with pytest.raises(ValueError, match="one result per slice"):
        merge_batches([np.zeros(10)], [slice(0, 10), slice(5, 15)], 15)
    with pytest.raises(ValueError, match="channels on axis"):
        merge_batches([np.zeros(10), np.zeros(9)], [slice(0, 10), slice(5, 15)], 15)
    with pytest.raises(ValueError, match="not matching"):
        merge_batches([np.zeros((2, 10)), np.zeros((3, 10))], [slice(0, 10), slice(5, 15)], 15)
    with pytest.raises(ValueError, match="within"):
        merge_batches([np.zeros(10)], [slice(5, 15)], 12)
    with pytest.raises(ValueError, match="step 1"):
        merge_batches([np.zeros(5)], [slice(0, 10, 2)], 10)
    with pytest.raises(ValueError, match="weights"):
        merge_batches([np.zeros(10)], [slice(0, 10)], 10, weights="cosine")
