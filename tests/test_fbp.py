"""First checks of the projector and FBP (the engine issue adds the full set)."""
import numpy as np
import pytest
import torch

from xrdwidgets import data
from xrdwidgets.ops import ParallelProjector, fbp_filter
from xrdwidgets.recon import fbp, fbp_array


def test_adjoint_is_exact_transpose():
    rng = np.random.default_rng(0)
    op = ParallelProjector(23, np.linspace(0, 180, 17, endpoint=False), n_translations=25,
                           centre_offset=0.7, device="cpu")
    x = rng.random((23, 23, 3)).astype(np.float32)
    y = rng.random((25, 17, 3)).astype(np.float32)
    lhs = float(np.sum(op(x).astype(np.float64) * y))
    rhs = float(np.sum(x.astype(np.float64) * op.T(y)))
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_autograd_backward_is_adjoint():
    op = ParallelProjector(12, np.linspace(0, 180, 9, endpoint=False), device="cpu")
    x = torch.rand(12, 12, 2, requires_grad=True)
    y = torch.rand(12, 9, 2)
    (op(x) * y).sum().backward()
    torch.testing.assert_close(x.grad, op.T(y), rtol=1e-5, atol=1e-5)


def test_filters_known_values():
    r = fbp_filter(64, "ramp")
    assert 0 < r[0] < 0.01 and r[r.size // 2] == pytest.approx(1.0, abs=0.01)
    for name in ("shepp-logan", "cosine", "hamming", "hann"):
        w = fbp_filter(64, name)
        assert np.all(w <= r + 1e-12) and w[w.size // 2] <= r[r.size // 2]
    with pytest.raises(ValueError, match="unknown filter 'bogus'"):
        fbp_filter(64, "bogus")


def test_fbp_of_skimage_radon_data():
    # data from scikit-image's radon (a different forward model than ours): no inverse crime
    skt = pytest.importorskip("skimage.transform")
    from skimage.data import shepp_logan_phantom

    n = 65
    img = skt.resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
    th = np.linspace(0, 180, 90, endpoint=False)
    s = skt.radon(img, th, circle=True)
    rec = fbp_array(s, th)
    m = np.hypot(*(np.mgrid[:n, :n] - (n - 1) / 2)) < n / 2 - 2
    rmse = np.sqrt(np.mean((rec - img)[m] ** 2))
    psnr = 20 * np.log10(1.0 / rmse)
    assert psnr > 22, psnr


def test_fbp_stack_streams_batches_and_keeps_coords():
    skt = pytest.importorskip("skimage.transform")
    n, na = 33, 40
    th = np.linspace(0, 180, na, endpoint=False)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    disc = (np.hypot(yy, xx) < 8).astype(float)
    sino1 = skt.radon(disc, th, circle=True)
    stack = np.stack([sino1 * k for k in (1.0, 2.0, 3.0, 4.0, 5.0)], axis=-1)
    da = data.sinogram_stack(stack, angle=th, spectral=np.linspace(3, 4, 5))
    events = []
    from xrdwidgets.recon.fbp import iterate_fbp
    from xrdwidgets.recon import run_to_end

    vol = run_to_end(iterate_fbp(da, batch=2), events.append)
    assert [e.iteration for e in events] == [1, 2, 3] and events[-1].total == 3
    assert vol.dims == ("y", "x", "tth") and vol.sizes["y"] == n
    np.testing.assert_allclose(vol.tth.values, da.tth.values)
    v = vol.values
    np.testing.assert_allclose(v[..., 4], 5 * v[..., 0], rtol=1e-4, atol=1e-4)
    assert v[n // 2, n // 2, 0] == pytest.approx(1.0, abs=0.08)
    assert "provenance_producer" in vol.attrs
    assert fbp(da, batch=5).equals(vol)


def test_fbp_rejects_bad_input():
    with pytest.raises(ValueError, match="angles given"):
        fbp_array(np.ones((10, 5)), np.arange(4))
    da = data.sinogram_stack(np.ones((6, 4, 2)), spectral=[1.0, 2.0])
    with pytest.raises(ValueError, match="batch"):
        fbp(da, batch=0)


@pytest.mark.parametrize("mask", [True, False])
def test_adjoint_paths_agree(mask):
    """Sparse, numba (if installed) and grid_sample back-projections are the same operator."""
    rng = np.random.default_rng(2)
    th = np.sort(rng.uniform(0, 360, 23))
    op = ParallelProjector(20, th, n_translations=22, centre_offset=-0.6, mask=mask, device="cpu")
    y = torch.from_numpy(rng.random((22, 23, 2)).astype(np.float32))
    free = op._adjoint_matrix_free(y)
    grid = op._adjoint_grid_sample(y)
    op.matrix_free_below = 0
    sparse = op.T(y)
    torch.testing.assert_close(free, sparse, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grid, sparse, rtol=1e-5, atol=1e-4)


def test_memory_budget_blocks_give_same_result():
    rng = np.random.default_rng(3)
    th = np.linspace(0, 180, 30, endpoint=False)
    x = rng.random((16, 16, 3)).astype(np.float32)
    y = rng.random((16, 30, 3)).astype(np.float32)
    whole = ParallelProjector(16, th, device="cpu", matrix_free_below=0)
    blocked = ParallelProjector(16, th, device="cpu", matrix_free_below=0, block_bytes=1, memory_budget=0)
    assert len(blocked._blocks) == 30 and not blocked._cache
    np.testing.assert_allclose(blocked(x), whole(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(blocked.T(y), whole.T(y), rtol=1e-6, atol=1e-6)
    assert not blocked._cache  # nothing kept beyond the budget


def test_matrix_free_numba_operator_matches_sparse():
    kern = pytest.importorskip("xrdwidgets.ops._cpu_kernels")
    if not kern.HAVE_NUMBA:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(4)
    th = np.sort(rng.uniform(0, 360, 19))
    sparse = ParallelProjector(18, th, n_translations=21, centre_offset=0.8, mask=True, device="cpu",
                               matrix_free_below=0)
    free = ParallelProjector(18, th, n_translations=21, centre_offset=0.8, mask=True, device="cpu",
                             memory_budget=0)
    x = rng.random((18, 18, 4)).astype(np.float32) * sparse.mask[..., None]
    y = rng.random((21, 19, 4)).astype(np.float32)
    np.testing.assert_allclose(free(x), sparse(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(free.T(y), sparse.T(y), rtol=1e-5, atol=1e-5)
    assert not free._cache  # no matrix was built
    lhs = float(np.sum(free(x).astype(np.float64) * y))
    rhs = float(np.sum(x.astype(np.float64) * free.T(y)))
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_numba_kernels_leave_torchs_thread_count_alone():
    # numba's OpenMP layer would set the shared OpenMP thread count to all cores
    import subprocess
    import sys

    pytest.importorskip("numba")
    code = ("import numpy as np, torch\n"
            "from xrdwidgets.ops.projector import ParallelProjector\n"
            "op = ParallelProjector(32, np.linspace(0, 180, 12, endpoint=False), memory_budget=0)\n"
            "op(np.random.rand(32, 32).astype(np.float32)); op.T(np.random.rand(32, 12).astype(np.float32))\n"
            "import numba; assert numba.threading_layer() is not None\n"
            "print(torch.get_num_threads())\n")
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "1"
