"""ROAD's noisy linear imputation (Rong et al., ICML 2022), solved for a batch on its device.

Each imputed pixel is the weighted mean of its 8 neighbours, known or imputed, with weight 1/6
for the edge neighbours and 1/12 for the diagonal ones, neighbours outside the image left out and
the weights renormalised (grad-cam's `NoisyLinearImputer`, from tleemann/road_evaluation):

    d_i x_i - sum_{j imputed} w_ij x_j = sum_{j known} w_ij g_j,   d_i = sum_{j in image} w_ij

The matrix is symmetric positive definite wherever an imputed region touches a known pixel, so the
systems of a whole batch (one per image and channel) are solved together by conjugate gradient,
preconditioned by one V-cycle of aggregation multigrid: 2 x 2 blocks of pixels are merged level by
level (Galerkin coarse operators P^T A P, which keep the 9-point stencil), with one damped Jacobi
sweep before and after each coarse correction. The operator never becomes a sparse matrix: it is
a diagonal and eight coefficient planes, applied by shifted multiply-adds on the device. On the
CPU the compiled op camfast::road_impute (csrc/cpu/road_impute.cpp) runs the same solver with
each sweep fused into one loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _extension

# Offsets (dy, dx) of the 8 neighbours and their weights.
NEIGHBOURS = [((dy, dx), 1 / 12 if dy and dx else 1 / 6) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
JACOBI_DAMPING = 0.8
# Piecewise-constant prolongation makes coarse corrections too small (the coarse operators are
# stiffer than the fine one by about 2); scaling them up cut the iterations to 1e-8 from 30-57 to
# 13-19 on 224 x 224 masks (benchmarks/NOTES.md, ROAD).
COARSE_SCALE = 1.8
CHECK_EVERY = 4  # iterations between convergence checks (each reads one scalar back)


def _window(size: int, offset: int) -> tuple[slice, slice]:
    """(target, source) slices along one axis: target index i reads source index i + offset."""
    if offset >= 0:
        return slice(0, size - offset), slice(offset, size)
    return slice(-offset, size), slice(0, size + offset)


class _Stencil:
    """A = diag - sum_o coef[o] * shift_o on fields [B, C, h, w]; diag and coef are [B, 1, h, w],
    zero outside the unknowns (so A maps fields that vanish there to fields that vanish there)."""

    def __init__(self, diag: torch.Tensor, coef: dict):
        self.diag, self.coef = diag, coef
        self.unknown = diag > 0
        self.inv_diag = torch.where(self.unknown, 1 / torch.where(self.unknown, diag, 1), 0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.diag * x
        h, w = x.shape[-2:]
        for (dy, dx), c in self.coef.items():
            (ty, sy), (tx, sx) = _window(h, dy), _window(w, dx)
            y[..., ty, tx].addcmul_(c[..., ty, tx], x[..., sy, sx], value=-1)
        return y

    def coarsen(self) -> "_Stencil":
        """P^T A P for P the piecewise-constant prolongation from 2 x 2 blocks."""
        h, w = self.diag.shape[-2:]
        pad = (0, w % 2, 0, h % 2)
        diag = F.pad(self.diag, pad)
        coef = {o: F.pad(c, pad) for o, c in self.coef.items()}
        coarse_diag = F.avg_pool2d(diag, 2, divisor_override=1)
        coarse_coef = {o: torch.zeros_like(coarse_diag) for o in self.coef}
        for (dy, dx), c in coef.items():
            for a in (0, 1):
                for b in (0, 1):
                    block = ((a + dy) // 2, (b + dx) // 2)
                    part = c[..., a::2, b::2]
                    if block == (0, 0):
                        coarse_diag = coarse_diag - part
                    else:
                        coarse_coef[block] = coarse_coef[block] + part
        return _Stencil(coarse_diag.clamp_min(0), coarse_coef)


def _fine_stencil(unknown: torch.Tensor, dtype: torch.dtype) -> _Stencil:
    """The imputation operator for masks [B, 1, H, W] (True: imputed)."""
    u = unknown.to(dtype)
    h, w = u.shape[-2:]
    inside = torch.zeros_like(u[:1])
    coef = {}
    for (dy, dx), weight in NEIGHBOURS:
        (ty, sy), (tx, sx) = _window(h, dy), _window(w, dx)
        inside[..., ty, tx] += weight
        c = torch.zeros_like(u)
        c[..., ty, tx] = weight * u[..., ty, tx] * u[..., sy, sx]
        coef[(dy, dx)] = c
    return _Stencil(inside * u, coef)


def _known_sum(values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """sum over the 8 neighbours j of w_ij * values_j * known_j, for every pixel i."""
    masked = values * known
    out = torch.zeros_like(masked)
    h, w = out.shape[-2:]
    for (dy, dx), weight in NEIGHBOURS:
        (ty, sy), (tx, sx) = _window(h, dy), _window(w, dx)
        out[..., ty, tx].add_(masked[..., sy, sx], alpha=weight)
    return out


class _Multigrid:
    """One symmetric V-cycle (damped Jacobi, Galerkin aggregation) as a preconditioner."""

    def __init__(self, fine: _Stencil):
        self.levels = [fine]
        while min(self.levels[-1].diag.shape[-2:]) > 1:
            self.levels.append(self.levels[-1].coarsen())

    def __call__(self, r: torch.Tensor, depth: int = 0) -> torch.Tensor:
        level = self.levels[depth]
        if depth == len(self.levels) - 1:
            return r * level.inv_diag
        z = JACOBI_DAMPING * r * level.inv_diag
        residual = r - level(z)
        h, w = residual.shape[-2:]
        coarse = F.avg_pool2d(F.pad(residual, (0, w % 2, 0, h % 2)), 2, divisor_override=1)
        correction = self(coarse, depth + 1).repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :h, :w]
        z = z + COARSE_SCALE * correction * level.unknown
        return z + JACOBI_DAMPING * (r - level(z)) * level.inv_diag


def impute(images: torch.Tensor, unknown: torch.Tensor, noise: float = 0.0, generator=None,
           rtol: float = 1e-8, max_iter: int = 500) -> torch.Tensor:
    """ROAD's noisy linear imputation of images [B, C, H, W] where unknown [B, H, W] is True.

    The systems are solved in float64 to a relative residual of rtol (the solution then agrees
    with a sparse direct solve to about 1e-7 on images of unit scale), then noise * N(0, 1) from
    `generator` (or the global generator of the images' device) is added to the imputed pixels.
    A batch entry with no known pixel has a singular system; its pixels are set to 0 plus noise.
    Returns a new tensor of the images' dtype.

    Example:
        >>> import torch
        >>> from camfast.metrics import impute
        >>> ramp = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> unknown = torch.zeros(1, 4, 4, dtype=torch.bool)
        >>> unknown[0, 1, 1] = True                        # forget one pixel of a linear ramp
        >>> impute(ramp, unknown)[0, 0, 1, 1]              # its neighbours' mean restores it
        tensor(5.)
    """
    g = images.to(torch.float64)
    if g.device.type == "cpu" and _extension.has_cpp("cpu"):  # the same solver, with fused sweeps
        out = torch.ops.camfast.road_impute(g, unknown, rtol, max_iter).to(images.dtype)
    else:
        out = _solve(g, unknown, rtol, max_iter).to(images.dtype)
    if noise:
        draw = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        out = torch.where(unknown[:, None], out + noise * draw, out)
    return out


def _solve(g: torch.Tensor, unknown: torch.Tensor, rtol: float, max_iter: int) -> torch.Tensor:
    u = unknown[:, None]
    stencil = _fine_stencil(u, torch.float64)
    b = _known_sum(g, (~u).to(torch.float64)) * stencil.unknown
    x = _conjugate_gradient(stencil, _Multigrid(stencil), b, rtol, max_iter)
    return torch.where(u, x, g)


def _conjugate_gradient(A: _Stencil, M: _Multigrid, b: torch.Tensor, rtol: float, max_iter: int) -> torch.Tensor:
    """Batched preconditioned CG: one system per [B, C] plane, each with its own step sizes."""
    dims = (-2, -1)
    x = torch.zeros_like(b)
    r = b.clone()
    z = M(r)
    p = z.clone()
    rz = (r * z).sum(dims, keepdim=True)
    limit = (rtol * b.norm(dim=dims)).clamp_min(torch.finfo(b.dtype).tiny)
    for iteration in range(max_iter):
        if iteration % CHECK_EVERY == 0 and bool((r.norm(dim=dims) <= limit).all()):
            break
        ap = A(p)
        pap = (p * ap).sum(dims, keepdim=True)
        alpha = torch.where(pap > 0, rz / torch.where(pap > 0, pap, 1), 0)
        x += alpha * p
        r -= alpha * ap
        z = M(r)
        rz_next = (r * z).sum(dims, keepdim=True)
        beta = torch.where(rz > 0, rz_next / torch.where(rz > 0, rz, 1), 0)
        rz = rz_next
        p = z + beta * p
    return x
