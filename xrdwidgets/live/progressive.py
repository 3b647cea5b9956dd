"""Progressive reconstruction: the FBP of what was measured so far, updated by what is new.

FBP is linear in the sinogram. With ``S = Σ_a Bᵀ_a h * p_a`` (the back-projection ``Bᵀ_a`` of
the ramp-filtered column ``h * p_a`` of every angle ``a`` received so far), the FBP of those
``k`` angles is ``S · π / (2 k)`` — exactly :func:`xrdwidgets.recon.fbp.fbp_array` of the
sinogram restricted to them. New angles add their own back-projections to ``S``; nothing
already summed is computed again (:meth:`ProgressiveFBP.add`).

For scans with rotation as the fast axis, a sinogram grows by translation rows instead; the
filter runs along the translations, so each new row changes every filtered column. Linearity
still holds: :meth:`ProgressiveFBP.add` with the new rows' values (zeros elsewhere) over all
angles adds their contribution, and the image is the FBP of the sinogram with the rows not
yet measured set to zero.

:meth:`ProgressiveFBP.coverage` states the angles covered and the missing wedge (the largest
angular gap left, over the 180° a parallel-beam scan needs).

:class:`WarmSIRT` refines a few channel windows with SIRT iterations on the angles so far,
warm-started from its previous image.

Geometry and units are those of :class:`~xrdwidgets.ops.projector.ParallelProjector` (image
``(y, x)`` of one pixel per translation step, rotation axis at ``(n − 1)/2 + centre_offset``);
images are in sinogram units per step.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..ops.filters import fbp_filter, filter_sinogram
from ..ops.projector import ParallelProjector
from ..base.errors import InputError

__all__ = ["ProgressiveFBP", "WarmSIRT", "coverage"]


def coverage(angles_deg, done) -> dict:
    """Angles covered and the missing wedge of a partial scan.

    Parameters
    ----------
    angles_deg : array (n_angles,)
        The scan's angles (deg).
    done : bool array (n_angles,)
        Angles fully measured.

    Returns
    -------
    dict
        ``angles`` (count done), ``n_angles``, ``covered_deg`` (the span from the first to the
        last angle done), ``missing_wedge_deg`` (the largest gap between consecutive angles
        done, modulo 180°, minus one angle step; 0 when every angle of an even sampling is done).
    """
    a = np.asarray(angles_deg, float)
    d = np.asarray(done, bool)
    k = int(d.sum())
    if k == 0:
        return {"angles": 0, "n_angles": a.size, "covered_deg": 0.0, "missing_wedge_deg": 180.0}
    step = 180.0 / a.size if a.size else 180.0
    got = np.sort(np.mod(a[d], 180.0))
    gaps = np.diff(np.concatenate([got, [got[0] + 180.0]]))
    wedge = max(0.0, float(gaps.max()) - step)
    return {"angles": k, "n_angles": int(a.size), "covered_deg": float(a[d].max() - a[d].min() + step),
            "missing_wedge_deg": round(wedge, 6)}


class ProgressiveFBP:
    """FBP of a growing sinogram stack, updated with the new angles (or rows) only.

    Parameters
    ----------
    n_translations : int
    angles_deg : array (n_angles,)
        All angles of the scan (deg).
    n_channels : int
        Channels of the sinograms (bins, or channel windows).
    filter : str
        FBP filter (:data:`xrdwidgets.ops.FILTERS`).
    n : int, optional
        Image size (default ``n_translations``).
    centre_offset : float
        Rotation-axis offset in steps.
    circle : bool
        Zero outside the inscribed circle.
    device : optional
        torch device (default CPU: live mode leaves the GPU to other work).
    """

    def __init__(self, n_translations: int, angles_deg, n_channels: int, *, filter: str = "ramp",
                 n: int | None = None, centre_offset: float = 0.0, circle: bool = True, device="cpu"):
        fbp_filter(1, filter)   # unknown names fail now
        self.n_translations = int(n_translations)
        self.angles_deg = np.asarray(angles_deg, float).ravel()
        self.n = int(n or n_translations)
        self.n_channels = int(n_channels)
        self.filter = filter
        self.centre_offset = float(centre_offset)
        self.circle = bool(circle)
        self.device = torch.device(device)
        self._sum = torch.zeros(self.n, self.n, self.n_channels, device=self.device)
        self.done = np.zeros(self.angles_deg.size, bool)
        self.updates = 0

    def add(self, angle_index, columns, *, counts_angles: bool = True):
        """Add the back-projection of new sinogram columns.

        Parameters
        ----------
        angle_index : int array (k,)
            Angles of the columns (indices into ``angles_deg``).
        columns : array (n_translations, k, n_channels)
            Their values (for rows added to angles already counted: the new rows' values,
            zeros elsewhere).
        counts_angles : bool
            Mark these angles as done (the normalisation counts them). Rows added to angles
            already counted pass ``False`` (or ``True``: they are counted once).
        """
        idx = np.asarray(angle_index, np.int64).ravel()
        if idx.size == 0:
            return
        col = torch.as_tensor(np.asarray(columns, np.float32), device=self.device)
        expect = (self.n_translations, idx.size, self.n_channels)
        if tuple(col.shape) != expect:
            raise InputError(f"ProgressiveFBP.add: columns of shape {expect} expected, found {tuple(col.shape)}")
        op = ParallelProjector(self.n, self.angles_deg[idx], n_translations=self.n_translations,
                               centre_offset=self.centre_offset, mask=self.circle, device=self.device)
        self._sum += op.T(filter_sinogram(col, self.filter))
        if counts_angles:
            self.done[idx] = True
        self.updates += 1

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    def image(self) -> np.ndarray:
        """The current FBP ``(y, x, n_channels)`` float32 (zeros before any angle)."""
        k = self.n_done
        if k == 0:
            return np.zeros((self.n, self.n, self.n_channels), np.float32)
        return (self._sum * (math.pi / (2.0 * k))).cpu().numpy()

    def coverage(self) -> dict:
        """See :func:`coverage`."""
        return coverage(self.angles_deg, self.done)


class WarmSIRT:
    """SIRT on the angles measured so far, warm-started from the previous image.

    Parameters
    ----------
    n_translations, angles_deg, n, centre_offset, circle, device :
        As :class:`ProgressiveFBP`.
    n_iter : int
        Iterations per update.
    """

    def __init__(self, n_translations: int, angles_deg, *, n_iter: int = 10, n: int | None = None,
                 centre_offset: float = 0.0, circle: bool = True, device="cpu"):
        self.n_translations = int(n_translations)
        self.angles_deg = np.asarray(angles_deg, float).ravel()
        self.n = int(n or n_translations)
        self.n_iter = int(n_iter)
        self.centre_offset = float(centre_offset)
        self.circle = bool(circle)
        self.device = device
        self.x = None

    def update(self, sinogram, done) -> np.ndarray:
        """Iterate on ``sinogram[:, done]`` ``(n_translations, n_angles, C)``; returns ``(y, x, C)``."""
        from ..recon.sirt import sirt_array

        d = np.asarray(done, bool)
        if not d.any():
            return None
        op = ParallelProjector(self.n, self.angles_deg[d], n_translations=self.n_translations,
                               centre_offset=self.centre_offset, mask=self.circle, device=self.device)
        sino = np.ascontiguousarray(np.asarray(sinogram, np.float32)[:, d])
        x0 = None if self.x is None or self.x.shape[-1] != sino.shape[-1] else self.x
        self.x = np.asarray(sirt_array(sino, op, self.n_iter, x0=x0), np.float32)
        return self.x
