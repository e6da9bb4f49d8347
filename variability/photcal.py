"""The photometric model of one frame (seed Mini-MegaTORTORA Eq. 1) and its fit.

    instrumental = V + Z0(xn, yn) + C · (B − V)

``Z0`` is a polynomial of order ``order`` (4 in the seed) in the normalised pixel coordinates
``xn = 2 x / (naxis1 − 1) − 1`` (same for y) with terms ordered by total degree, then by the
power of ``yn`` (1, xn, yn, xn², xn yn, yn², ...) — the basis of ``z0_poly`` in sql/views.sql.
``C`` is one number per frame. :func:`fit_frame` is the one fitting function: ``lcdb calibrate``
calls it with the reference catalogue's V and B−V, ``lcdb refine`` with the reconstructed ones.

The fit (1) weights each star by 1 / (σ_instr² + σ_V² + σ_floor²), (2) solves the linear least
squares problem, (3) clips stars whose residual exceeds ``clip`` robust sigmas (1.4826 MAD of the
normalised residuals, scaled), and repeats (2)-(3) until no star changes or ``max_iter``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lcdb import zeropoint

# The basis lives with the store (lcdb.zeropoint), which evaluates z0 for light curves too.
z0_terms = zeropoint.terms
normalise = zeropoint.normalise
design = zeropoint.design
evaluate = zeropoint.evaluate


@dataclass(frozen=True)
class FitConfig:
    """Parameters of the frame fit.

    Parameters
    ----------
    order : int
        Order of Z0(x, y).
    clip : float
        Clipping threshold in robust sigmas.
    max_iter : int
        Clipping iterations.
    floor_mag : float
        Error added in quadrature to every star (unmodelled scatter: flat-field, PSF).
    min_stars : int
        Fewest stars a fit may use; below this (or fewer than 2x the parameters) it is rejected.
    fit_color : bool
        Fit the colour term C (else C = 0).
    """

    order: int = 4
    clip: float = 3.0
    max_iter: int = 10
    floor_mag: float = 0.01
    min_stars: int = 20
    fit_color: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.order <= 6:
            problems.append(f"order must be in 0..6, got {self.order}")
        if not self.clip > 1:
            problems.append(f"clip must be > 1 sigma, got {self.clip}")
        if self.max_iter < 1:
            problems.append(f"max_iter must be >= 1, got {self.max_iter}")
        if self.floor_mag < 0:
            problems.append(f"floor_mag must be >= 0, got {self.floor_mag}")
        if self.min_stars < 1:
            problems.append(f"min_stars must be >= 1, got {self.min_stars}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def n_params(self) -> int:
        return len(z0_terms(self.order)) + int(self.fit_color)


@dataclass
class FrameFit:
    """Result of :func:`fit_frame`."""

    ok: bool
    reason: str = ""
    coeffs: np.ndarray = field(default_factory=lambda: np.empty(0))
    color: float = float("nan")
    color_err: float = float("nan")
    rms: float = float("nan")
    chi2: float = float("nan")
    n_used: int = 0
    used: np.ndarray = field(default_factory=lambda: np.empty(0, bool))


def fit_frame(
    xn: np.ndarray,
    yn: np.ndarray,
    mag: np.ndarray,
    mag_err: np.ndarray,
    v: np.ndarray,
    bv: np.ndarray,
    v_err: np.ndarray | None = None,
    config: FitConfig | None = None,
) -> FrameFit:
    """Fit ``mag − V = Z0(xn, yn) + C (B − V)`` with weights and iterative clipping.

    Parameters
    ----------
    xn, yn : array
        Normalised positions of the reference stars on the frame.
    mag, mag_err : array
        Instrumental magnitudes and their errors.
    v, bv : array
        Reference V and B−V of the same stars.
    v_err : array, optional
        Errors of the reference V.
    config : FitConfig
        Order, clipping and acceptance rules.
    """
    cfg = config or FitConfig()
    y = np.asarray(mag, float) - np.asarray(v, float)
    err2 = np.asarray(mag_err, float) ** 2 + cfg.floor_mag**2
    if v_err is not None:
        err2 = err2 + np.nan_to_num(np.asarray(v_err, float)) ** 2
    cols = [design(np.asarray(xn, float), np.asarray(yn, float), cfg.order)]
    if cfg.fit_color:
        cols.append(np.asarray(bv, float)[:, None])
    a = np.hstack(cols)
    good = np.isfinite(y) & np.isfinite(err2) & np.all(np.isfinite(a), axis=1)
    need = max(cfg.min_stars, 2 * cfg.n_params)
    if good.sum() < need:
        return FrameFit(False, f"too few reference stars ({int(good.sum())} < {need})")
    w = 1.0 / np.sqrt(err2)
    used = good.copy()
    coef = np.zeros(a.shape[1])
    cov = None
    for _ in range(cfg.max_iter):
        if used.sum() < need:
            return FrameFit(False, f"too few stars left after clipping ({int(used.sum())})")
        # Normal equations: p <= 29 columns in [-1, 1], so A^T W A is well conditioned and this
        # is ~100x faster than an SVD least squares on thousands of stars (bench/pipeline.py).
        aw = a[used] * w[used, None]
        normal = aw.T @ aw
        if np.linalg.cond(normal) > 1e12:
            return FrameFit(False, "degenerate fit (stars do not constrain the model)")
        coef = np.linalg.solve(normal, aw.T @ (y[used] * w[used]))
        resid = y - a @ coef
        norm = resid * w
        sigma = 1.4826 * np.median(np.abs(norm[used] - np.median(norm[used])))
        new_used = good & (np.abs(norm) <= cfg.clip * max(sigma, 1e-12))
        if np.array_equal(new_used, used):
            break
        used = new_used
    aw = a[used] * w[used, None]
    try:
        cov = np.linalg.inv(aw.T @ aw)
    except np.linalg.LinAlgError:
        return FrameFit(False, "singular normal matrix")
    resid = y - a @ coef
    dof = max(int(used.sum()) - a.shape[1], 1)
    chi2 = float(np.sum((resid[used] * w[used]) ** 2) / dof)
    n_z = len(z0_terms(cfg.order))
    return FrameFit(
        ok=True,
        coeffs=coef[:n_z],
        color=float(coef[n_z]) if cfg.fit_color else 0.0,
        color_err=float(np.sqrt(cov[n_z, n_z] * max(chi2, 1.0))) if cfg.fit_color else 0.0,
        rms=float(np.std(resid[used])),
        chi2=chi2,
        n_used=int(used.sum()),
        used=used,
    )
