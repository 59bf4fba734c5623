"""Fit the polynomial coefficients of the vectorised erf in cpp/kernels/f32-activation.h.

erf(x) for |x| < 1 is x * P(x^2); for 1 <= |x| < 4 it is 1 - exp(-x^2) * Q(x - 2.5), Q a polynomial in x; past 4
it is 1 in float32. Both are least-squares fits on Chebyshev nodes, in float64, of the exact erf
(math.erf); the script prints the coefficients (highest degree first, as Horner's rule uses them)
and the largest error of the fitted forms evaluated in float32 arithmetic.
Run: python tools/fit_erf.py"""
from __future__ import annotations

import math

import numpy as np

ERF = np.vectorize(math.erf)


def chebyshev_nodes(lo: float, hi: float, n: int) -> np.ndarray:
    k = np.arange(n)
    return (lo + hi) / 2 + (hi - lo) / 2 * np.cos((2 * k + 1) * np.pi / (2 * n))


def fit(x: np.ndarray, y: np.ndarray, t: np.ndarray, degree: int) -> np.ndarray:
    """Coefficients c (highest first) with sum c_i t^i ~ y, minimising the relative error of y."""
    basis = np.vander(t, degree + 1)
    return np.linalg.lstsq(basis / y[:, None], np.ones_like(y), rcond=None)[0]


def horner32(c: np.ndarray, t: np.ndarray) -> np.ndarray:
    acc = np.full_like(t, np.float32(c[0]))
    for coefficient in c[1:]:
        acc = acc * t + np.float32(coefficient)
    return acc


def main() -> None:
    small = chebyshev_nodes(0.0, 1.0, 400)
    p = fit(small, ERF(small) / small, small * small, 6)
    large = chebyshev_nodes(1.0, 4.0, 400)
    q = fit(large, (1 - ERF(large)) * np.exp(large * large), large - 2.5, 11)
    print("P (x^2):", ", ".join(f"{v:.9e}f" for v in p))
    print("Q (x - 2.5):", ", ".join(f"{v:.9e}f" for v in q))
    xs = np.linspace(0, 4, 200001).astype(np.float32)
    exact = ERF(xs.astype(np.float64))
    x2 = xs * xs
    ours = np.where(xs < 1, xs * horner32(p, x2), np.float32(1) - np.exp(-x2) * horner32(q, xs - np.float32(2.5)))
    small_error = np.max(np.abs(ours - exact)[xs < 1])
    print(f"max |error| below 1: {small_error:.3g}")
    print(f"max |error| in float32: {np.max(np.abs(ours - exact)):.3g}")


if __name__ == "__main__":
    main()
