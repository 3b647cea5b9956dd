"""The batched, bounded Levenberg–Marquardt solver (torch, CPU or GPU) of the per-pixel fit.

:func:`iterate_lm` iterates a streaming working set of pixels together, each with its own
damping; :func:`fit_patterns` runs it on an ``(n, n_channels)`` array. One LM sweep is cut into
:func:`_evaluate_trial` (model at the trial points), :func:`gain_ratio` and :func:`damping_update`
(Nielsen's update), :func:`_accept` (keep the better point, test convergence) and
:func:`_next_step` (the damped, bound-projected step solve and the stop tests before the next
evaluation); see :mod:`xrdwidgets.analysis.fitting` for the maths.
"""
from __future__ import annotations

import numpy as np

from ...base.errors import DataError
from ...base.progress import run_to_end
from ..peaks import PeakModel, background_abscissa
from .bounds import resolve_bounds
from .jacobian import autograd_jacobian, normal_equations

__all__ = ["iterate_lm", "fit_patterns", "damping_update", "gain_ratio", "fit_device", "fit_dtype",
           "working_set_size", "check_max_iter", "check_jacobian"]

_LAMBDA_MAX = 1e16
_LAMBDA0 = 1e-3
#: Per-pixel state of the working set (rows of tensors, new pixels first).
_KEYS = ("idx", "y", "sw", "p", "jtj", "g", "cost", "lam", "nu", "it", "syy", "trial", "pred")


# ----------------------------------------------------------------------------- options
def fit_device(device):
    """The torch device of a fit: ``device`` checked, default CUDA when available, else CPU."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DataError(f"iterate_fit: device must be a torch device name such as 'cpu' or 'cuda', "
                        f"found {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DataError("iterate_fit: device='cuda' requested but CUDA is not available here")
    return dev


def working_set_size(batch_pixels, dev, n_channels, model):
    """Working-set size (pixels): small enough for the CPU caches on CPU, large on a GPU."""
    if batch_pixels is None:
        if dev.type == "cpu":
            return max(256, min(4096, (800 * 2**10) // (8 * n_channels)))
        return max(4096, (512 * 2**20) // (8 * n_channels * (model.n_params + 8)))
    if isinstance(batch_pixels, bool) or not isinstance(batch_pixels, (int, np.integer)) or batch_pixels < 1:
        raise DataError(f"iterate_fit: batch_pixels must be an integer >= 1, found {batch_pixels!r}")
    return int(batch_pixels)


def fit_dtype(dtype):
    """The torch float dtype of a fit: ``None`` → float64; float32/float64 (or their names)."""
    import torch

    if dtype is None:
        return torch.float64
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if dtype not in (torch.float32, torch.float64):
        raise DataError(f"iterate_fit: dtype must be torch.float32 or torch.float64, found {dtype!r}")
    return dtype


def check_max_iter(max_iter):
    """``max_iter`` as an int >= 1."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise DataError(f"iterate_fit: max_iter must be an integer >= 1, found {max_iter!r}")
    return int(max_iter)


def check_jacobian(jacobian):
    """``jacobian`` checked: ``"analytic"`` or ``"autograd"``."""
    if jacobian not in ("analytic", "autograd"):
        raise DataError(f"iterate_fit: jacobian must be 'analytic' or 'autograd', found {jacobian!r}")
    return jacobian


# ----------------------------------------------------------------------------- one LM sweep
class _Problem:
    """What stays fixed during a solve: bounds as tensors, tolerances, the background powers."""

    def __init__(self, model, x, lo, hi, ftol, xtol, gtol, jacobian):
        import torch

        self.model, self.x, self.jacobian = model, x, jacobian
        self.dev, self.dt = x.device, x.dtype
        self.npar = model.n_params
        self.lo_t = torch.as_tensor(lo, dtype=self.dt, device=self.dev)
        self.hi_t = torch.as_tensor(hi, dtype=self.dt, device=self.dev)
        self.fixed = self.lo_t == self.hi_t
        n_free = int((~self.fixed).sum())
        self.dof = max(x.shape[0] - n_free, 1)
        self.eps = float(torch.finfo(self.dt).eps)
        self.tiny = float(torch.finfo(self.dt).tiny)
        # tolerances below the precision of the dtype would never trigger (float32)
        eps = self.eps
        self.ftol, self.xtol, self.gtol = max(ftol, 10 * eps), max(xtol, 10 * eps), max(gtol, 10 * eps)
        t = background_abscissa(x)
        self.powers = torch.stack([t ** k for k in range(model.n_background)]) if model.n_background else None
        self.free_f = (~self.fixed).to(self.dt)
        self.fix_diag = torch.diag(1.0 - self.free_f)


def _evaluate_trial(pb: _Problem, p, y, sw):
    """Cost ½Σ(w r)², JᵀJ ``(n, P, P)`` and Jᵀr ``(n, P)`` at parameters ``p`` ``(n, P)``."""
    if pb.jacobian == "analytic":
        return normal_equations(pb.model, pb.x, pb.powers, p, y, sw)
    f, J = autograd_jacobian(pb.model, pb.x, p)
    r = f - y
    if sw is not None:
        r = r * sw
        J = J * sw[..., None]
    return 0.5 * (r * r).sum(-1), J.transpose(1, 2) @ J, (J.transpose(1, 2) @ r[..., None])[..., 0]


def gain_ratio(actual, pred, finite):
    """ρ = actual / predicted reduction per pixel; −1 where the trial cost is not finite or pred ≤ 0."""
    import torch

    return torch.where(finite & (pred > 0), actual / torch.where(pred > 0, pred, torch.ones_like(pred)),
                       -torch.ones_like(pred))


def damping_update(lam, nu, rho, accept, fresh):
    """Nielsen's update of the damping ``(λ, ν)`` per pixel (tensors ``(n,)``).

    Accepted step: λ ← λ · max(1/3, 1 − (2ρ − 1)³), ν ← 2; rejected: λ ← λ·ν, ν ← 2ν. A new pixel
    (``fresh``: its "step" was the evaluation of its initial guess) keeps its λ.
    """
    import torch

    lam_new = torch.where(fresh, lam, torch.where(
        accept, lam * torch.clamp(1.0 - (2.0 * rho - 1.0) ** 3, min=1.0 / 3.0), lam * nu))
    nu_new = torch.where(accept, torch.full_like(nu, 2.0), nu * 2.0)
    return lam_new, nu_new


def _accept(pb: _Problem, st: dict, n_fresh: int):
    """Evaluate the trial points, keep the accepted ones, update the damping.

    Returns ``(conv, alive)``: pixels converged by this step (cost or step small, or λ beyond
    1e16) and pixels still worth iterating (finite trial cost, or not new).
    """
    import torch

    p, cost, lam, nu, trial, pred = st["p"], st["cost"], st["lam"], st["nu"], st["trial"], st["pred"]
    fresh = torch.zeros(p.shape[0], dtype=torch.bool, device=pb.dev)
    fresh[:n_fresh] = True
    c_new, j_new, g_new = _evaluate_trial(pb, trial, st["y"], st["sw"])
    finite = torch.isfinite(c_new)
    actual = cost - c_new
    rho = gain_ratio(actual, pred, finite)
    accept = finite & (fresh | (rho > 0))
    lam_new, nu_new = damping_update(lam, nu, rho, accept, fresh)
    old = ~fresh
    step = trial - p
    conv = old & accept & ((actual <= pb.ftol * cost) | (step.abs() <= pb.xtol * (p.abs() + pb.xtol)).all(-1))
    conv |= lam_new > _LAMBDA_MAX
    acc = accept[:, None]
    st["p"] = torch.where(acc, trial, p)
    st["cost"] = torch.where(accept, c_new, cost)
    st["jtj"] = torch.where(acc[..., None], j_new, st["jtj"])
    st["g"] = torch.where(acc, g_new, st["g"])
    st["lam"] = lam_new
    st["nu"] = nu_new
    st["it"] = st["it"] + 1
    return conv, finite | old


def _solve_damped(pb: _Problem, jtj, g, lam, ff):
    """LM step ``(n, P)`` of the free parameters ``ff``: (JᵀJ + λ·diag(JᵀJ)) δ = −Jᵀr (Marquardt's scaling).

    Returns the step and the diagonal of JᵀJ ``(n, P)``.
    """
    import torch

    d = torch.diagonal(jtj, dim1=-2, dim2=-1)
    dscale = torch.maximum(d, pb.eps * d.amax(-1, keepdim=True)).clamp_min(pb.tiny)
    a = jtj * (ff[:, :, None] * ff[:, None, :]) + torch.diag_embed(lam[:, None] * dscale * ff + (1.0 - ff))
    rhs = -(g * ff)
    step, info = torch.linalg.solve_ex(a, rhs)
    bad = torch.nonzero(info != 0)[:, 0]
    if bad.numel():  # singular normal equations: least-squares step
        step[bad] = torch.linalg.lstsq(a[bad], rhs[bad][..., None]).solution[..., 0]
    return step, d


def _next_step(pb: _Problem, st: dict):
    """LM step from the current point: trial point, its predicted reduction, convergence flags."""
    import torch

    p, jtj, g, cost, lam = st["p"], st["jtj"], st["g"], st["cost"], st["lam"]
    # free parameters: not fixed, and not on a bound with the gradient pushing outwards
    ff = (~pb.fixed & ~((p <= pb.lo_t) & (g > 0)) & ~((p >= pb.hi_t) & (g < 0))).to(pb.dt)
    step, d = _solve_damped(pb, jtj, g, lam, ff)
    # predicted reduction of the full LM step (convergence test) and of the clipped one (gain ratio)
    pred_full = -((g + 0.5 * (jtj @ step[..., None])[..., 0]) * step).sum(-1)
    trial = torch.clamp(p + step, pb.lo_t, pb.hi_t)
    step = trial - p
    st["trial"] = trial
    st["pred"] = -((g + 0.5 * (jtj @ step[..., None])[..., 0]) * step).sum(-1)
    # done before another evaluation: the largest cosine between the residual and a free
    # Jacobian column is below gtol (MINPACK), or the lightly damped (λ ≤ 1) step promises
    # less than ftol × cost
    norm = torch.sqrt(d.clamp_min(pb.tiny) * (2.0 * cost).clamp_min(pb.tiny)[:, None])
    return (((g.abs() * ff / norm).amax(-1) <= pb.gtol) | (cost <= pb.tiny)
            | ((pred_full <= pb.ftol * cost) & (lam <= 1.0)))


def _new_pixels(pb: _Problem, load, i0: int, k: int) -> dict:
    """State of the pixels ``i0 … i0 + k − 1`` entering the working set (``load`` gives the data)."""
    import torch

    dt, dev, npar = pb.dt, pb.dev, pb.npar
    y_new, sw_new, p0 = load(i0, i0 + k)
    yw = y_new if sw_new is None else y_new * sw_new
    p0 = torch.clamp(p0.to(dt), pb.lo_t, pb.hi_t)
    return {
        "idx": torch.arange(i0, i0 + k, device=dev), "y": y_new, "sw": sw_new, "p": p0,
        "jtj": torch.zeros((k, npar, npar), dtype=dt, device=dev),
        "g": torch.zeros((k, npar), dtype=dt, device=dev),
        "cost": torch.full((k,), float("inf"), dtype=dt, device=dev),
        "lam": torch.full((k,), _LAMBDA0, dtype=dt, device=dev),
        "nu": torch.full((k,), 2.0, dtype=dt, device=dev),
        "it": torch.zeros(k, dtype=torch.int32, device=dev),
        "syy": (yw * yw).sum(-1),
        "trial": p0,  # a new pixel's first "step" is the evaluation of its initial guess
        "pred": torch.zeros((k,), dtype=dt, device=dev),
    }


class _Results:
    """Result arrays of all pixels; finished pixels are recorded, their statistics computed in bulk."""

    def __init__(self, pb: _Problem, n_total: int, batch: int):
        npar = pb.npar
        self.pb, self.batch = pb, batch
        self.out = {
            "params": np.full((n_total, npar), np.nan), "stderr": np.full((n_total, npar), np.nan),
            "rwp": np.full(n_total, np.nan), "chi2": np.full(n_total, np.nan),
            "converged": np.zeros(n_total, dtype=bool), "n_iter": np.zeros(n_total, dtype=np.int32),
        }
        self.pending = []
        self.just_done = []  # (rows, params) finished since the last event

    def finish(self, sel, st, conv):
        """Record the finished pixels ``sel`` (indices into the working set); statistics later."""
        import torch

        rows = st["idx"].index_select(0, sel)
        p = st["p"].index_select(0, sel)
        cost = st["cost"].index_select(0, sel)
        ok = conv.index_select(0, sel) & torch.isfinite(cost) & torch.isfinite(p).all(-1)
        rows_np, p_np = rows.cpu().numpy(), p.cpu().numpy()
        self.out["params"][rows_np] = p_np
        self.just_done.append((rows_np, p_np))
        self.pending.append((rows, cost, st["syy"].index_select(0, sel), st["jtj"].index_select(0, sel), ok,
                             st["it"].index_select(0, sel)))
        if sum(len(q[0]) for q in self.pending) >= 16 * self.batch:
            self.flush()

    def flush(self):
        """Statistics of the recorded pixels, in one vectorised pass."""
        import torch

        if not self.pending:
            return
        pb, out = self.pb, self.out
        rows, cost, syy, jtj, ok, it = (torch.cat(z) for z in zip(*self.pending))
        self.pending.clear()
        rows = rows.cpu().numpy()
        ssr = 2.0 * cost
        chi2 = ssr / pb.dof
        a = jtj * (pb.free_f[:, None] * pb.free_f[None, :]) + pb.fix_diag
        inv, info = torch.linalg.inv_ex(a)
        var = torch.diagonal(inv, dim1=-2, dim2=-1) * chi2[:, None] * pb.free_f
        var = torch.where((info == 0)[:, None] & (var >= 0), var, torch.full_like(var, float("nan")))
        out["stderr"][rows] = torch.sqrt(var).cpu().numpy()
        out["rwp"][rows] = torch.sqrt(ssr / syy.clamp_min(pb.tiny)).cpu().numpy()
        out["chi2"][rows] = chi2.cpu().numpy()
        out["converged"][rows] = ok.cpu().numpy()
        out["n_iter"][rows] = it.cpu().numpy()


# ----------------------------------------------------------------------------- the LM loop
def iterate_lm(model, x, load, n_total, lo, hi, *, batch, max_iter, ftol, xtol, gtol, jacobian):
    """Streaming batched LM (torch). Generator of per-sweep dicts; returns numpy result arrays.

    A working set of at most ``batch`` pixels is iterated together; pixels that finish leave it
    and new ones (``load(i0, i1) -> (y, sw or None, p0)`` tensors ``(k, n_channels)``,
    ``(k, n_channels)``, ``(k, n_params)``) take their places, so every sweep works on a full
    batch until the queue is empty. A new pixel's first "step" is the evaluation of its initial
    guess. ``x`` is the spectral axis tensor ``(n_channels,)`` (its dtype and device are the
    solver's); ``lo``/``hi`` the bounds ``(n_params,)``.

    Yields
    ------
    dict
        ``sweep``, ``done`` (pixels finished), ``active`` (in the working set), ``loss`` (mean
        cost of the set), ``idx``/``params`` (the working set's pixels and current parameters)
        and ``finished`` (``(rows, params)`` finished since the last event).

    Returns
    -------
    dict of numpy arrays
        ``params``, ``stderr`` ``(n_total, n_params)``; ``rwp``, ``chi2``, ``converged``,
        ``n_iter`` ``(n_total,)``.
    """
    import torch

    pb = _Problem(model, x, lo, hi, ftol, xtol, gtol, jacobian)
    res = _Results(pb, n_total, batch)
    st = None
    queue = 0
    n_done = 0
    sweep = 0
    while queue < n_total or (st is not None and st["idx"].numel() > 0):
        size = 0 if st is None else st["idx"].numel()
        room = batch - size
        n_fresh = 0
        if queue < n_total and (room >= max(1, batch // 4) or size == 0):
            k = min(room, n_total - queue)
            new = _new_pixels(pb, load, queue, k)
            # new pixels go first: fresh = the first n_fresh rows
            st = new if st is None else {
                key: (None if new[key] is None else torch.cat([new[key], st[key]])) for key in _KEYS}
            queue += k
            n_fresh = k
        sweep += 1
        conv, alive = _accept(pb, st, n_fresh)
        conv |= alive & _next_step(pb, st)
        finished = conv | ~alive | (st["it"] >= max_iter)
        costs = st["cost"][torch.isfinite(st["cost"])]
        loss = float(costs.mean()) if costs.numel() else float("nan")
        fin = torch.nonzero(finished)[:, 0]
        n_fin = int(fin.numel())
        if n_fin:
            res.finish(fin, st, conv)
            keep = torch.nonzero(~finished)[:, 0]
            st = {key: (None if st[key] is None else st[key].index_select(0, keep)) for key in _KEYS}
            n_done += n_fin
        n_active = int(st["idx"].numel())
        yield {"sweep": sweep, "done": n_done, "active": n_active,
               "loss": loss,
               "idx": st["idx"], "params": st["p"], "finished": list(res.just_done)}
        res.just_done.clear()
    res.flush()
    return res.out


def fit_patterns(x, data, model: PeakModel | None = None, *, p0=None, bounds=None, positions=None,
                 sigma=None, max_iter: int = 100, ftol: float = 1e-8, xtol: float = 1e-8,
                 gtol: float = 1e-8, device=None, dtype=None, batch_pixels: int | None = None,
                 jacobian: str = "analytic") -> dict:
    """Fit a stack of patterns with the batched LM solver (the core of :func:`iterate_fit`).

    Parameters
    ----------
    x : array, shape (n_channels,)
        Spectral axis of the fitted range.
    data : array or tensor, shape (n, n_channels)
    model : PeakModel, default ``PeakModel()``
    p0 : array, shape (n, n_params), optional
        Starting parameters (default :meth:`PeakModel.initial_guess`).
    bounds, positions, sigma, max_iter, ftol, xtol, gtol, device, dtype, batch_pixels, jacobian :
        As in :func:`iterate_fit`; ``sigma`` is None, a number or an (n, n_channels) array.

    Returns
    -------
    dict of numpy arrays
        ``params`` (n, n_params), ``stderr`` (n, n_params), ``rwp``, ``chi2``, ``converged``,
        ``n_iter`` (n,), and ``param_names``.
    """
    import torch

    model = model or PeakModel()
    if not isinstance(model, PeakModel):
        raise DataError(f"fit_patterns: model must be a PeakModel, found {type(model).__name__}")
    x = np.array(x, dtype=float)
    y_np = np.asarray(data.detach().cpu() if hasattr(data, "detach") else data, dtype=float)
    if x.ndim != 1 or y_np.ndim != 2 or y_np.shape[1] != x.size:
        raise DataError(f"fit_patterns: x must be (n_channels,) and data (n, n_channels); found x "
                        f"{x.shape}, data {y_np.shape}")
    if x.size <= model.n_params:
        raise DataError(f"fit_patterns: {x.size} channels for {model.n_params} parameters; need more channels")
    if not np.all(np.isfinite(y_np)):
        raise DataError("fit_patterns: data must be finite")
    lo, hi = resolve_bounds(model, x, y_np, bounds, func="fit_patterns")
    dev = fit_device(device)
    dt = fit_dtype(dtype)
    sw_np = None
    if sigma is not None:
        try:
            s = np.broadcast_to(np.asarray(sigma, dtype=float), y_np.shape)
        except ValueError:
            raise DataError(f"fit_patterns: sigma of shape {np.shape(sigma)} does not broadcast against "
                            f"data {y_np.shape}") from None
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise DataError("fit_patterns: sigma must be finite and > 0")
        sw_np = 1.0 / s
    if p0 is not None:
        p0 = np.asarray(p0, dtype=float)
        if p0.shape != (y_np.shape[0], model.n_params):
            raise DataError(f"fit_patterns: p0 must have shape {(y_np.shape[0], model.n_params)}, found {p0.shape}")
    xt = torch.as_tensor(x, dtype=dt, device=dev)

    def load(i0, i1):
        y = torch.as_tensor(y_np[i0:i1], dtype=dt, device=dev)
        sw = None if sw_np is None else torch.as_tensor(np.ascontiguousarray(sw_np[i0:i1]), dtype=dt, device=dev)
        if p0 is None:
            start = model.initial_guess(xt, y, positions=positions)
        else:
            start = torch.as_tensor(p0[i0:i1], dtype=dt, device=dev)
        return y, sw, start

    batch = working_set_size(batch_pixels, dev, x.size, model)
    with torch.no_grad():
        res = run_to_end(iterate_lm(model, xt, load, y_np.shape[0], lo, hi, batch=batch,
                                    max_iter=check_max_iter(max_iter),
                                    ftol=ftol, xtol=xtol, gtol=gtol, jacobian=check_jacobian(jacobian)))
    res["param_names"] = model.param_names
    return res

