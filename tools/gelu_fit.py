"""The piecewise polynomials of selfsup's exact GELU (src/kernels/transformer/gelu.rs).

|x| in [0, 6) is cut into 8 intervals of width 0.75; on interval k, with s = |x| - (k + 0.5)·0.75,
    Q(|x|) = Φ(-|x|) = erfc(|x|/√2)/2          (the forward pass: gelu(x) = x·Φ(x))
    G(|x|) = Q(|x|) - |x|·φ(|x|)                (the backward pass: gelu'(x) = 1 - G or G)
are each a polynomial in s: a least-squares fit in float64 on 200 Chebyshev nodes of the
interval (close to the minimax fit), rounded to float32. Prints the Rust tables, one row per
power of s, one column per interval; `--check` reports the float32 Horner evaluation's largest
error against float64 on the tests' grid over [-12, 12] (gelu: absolute below 1, relative
above; gelu': absolute, where the tests multiply it by a gradient of up to 2). Needs numpy.
"""
import math
import sys
from fractions import Fraction

import numpy as np

INTERVALS, WIDTH = 8, 0.75
RANGE = INTERVALS * WIDTH
NODES = 200


def tail(a):
    return 0.5 * math.erfc(a / math.sqrt(2.0))


def slope_tail(a):
    return tail(a) - a * math.exp(-a * a / 2.0) / math.sqrt(2.0 * math.pi)


def fit(function, degree):
    rows = np.zeros((degree + 1, INTERVALS), dtype=np.float32)
    half = WIDTH / 2.0
    nodes = half * np.cos(np.pi * (np.arange(NODES) + 0.5) / NODES)
    for k in range(INTERVALS):
        centre = (k + 0.5) * WIDTH
        values = np.array([function(centre + s) for s in nodes])
        powers = np.vander(nodes, degree + 1, increasing=True)
        coefficients = np.linalg.lstsq(powers, values, rcond=None)[0]
        rows[:, k] = coefficients.astype(np.float32)
    return rows


def round_to_float32(exact):
    """The float32 nearest the rational `exact`, ties to even (one rounding, not two)."""
    guess = np.float32(float(exact))
    candidates = [guess, np.nextafter(guess, np.float32(-np.inf)), np.nextafter(guess, np.float32(np.inf))]

    def key(v):
        return (abs(Fraction(float(v)) - exact), int(np.array(v).view(np.uint32)) & 1)

    return min(candidates, key=key)


def fma32(a, b, c):
    """A fused multiply-add: exact in rationals, then one rounding to float32."""
    return round_to_float32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def evaluate(rows, a):
    """The kernel's float32 evaluation: interval, local variable, Horner with fused adds."""
    a = np.float32(a)
    k = min(int(a * np.float32(1.0 / WIDTH)), INTERVALS - 1)
    s = a - fma32(np.float32(k), np.float32(WIDTH), np.float32(WIDTH / 2.0))
    p = rows[-1, k]
    for j in range(rows.shape[0] - 2, -1, -1):
        p = fma32(p, s, rows[j, k])
    return p


def check(forward, backward):
    worst_forward = worst_backward = 0.0
    # The tests' grid: `i as f32 * 1e-4`, a float32 product.
    for x in np.arange(-120_000, 120_001, dtype=np.float32) * np.float32(1e-4):
        a, xd = abs(x), float(x)
        q = evaluate(forward, a) if a < RANGE else np.float32(0.0)
        g = evaluate(backward, a) if a < RANGE else np.float32(0.0)
        y = x * (np.float32(1.0) - q if x > 0 else q)
        d = np.float32(1.0) - g if x > 0 else g
        y_true = xd * (1.0 - tail(xd)) if xd > 0 else xd * tail(-xd)
        d_true = 1.0 - slope_tail(xd) if xd > 0 else slope_tail(-xd)
        worst_forward = max(worst_forward, abs(float(y) - y_true) / max(abs(y_true), 1.0))
        worst_backward = max(worst_backward, abs(float(d) - d_true))
    print(f"largest error: forward {worst_forward:.2e}, derivative {worst_backward:.2e}")


def rust_table(name, rows):
    print(f"const {name}: [[f32; INTERVALS]; {rows.shape[0]}] = [")
    for row in rows:
        # numpy's shortest float32 form, which Rust reads back to the same value.
        values = (str(np.float32(v)).replace("e-0", "e-") for v in row)
        print("    [" + ", ".join(values) + "],")
    print("];")


if __name__ == "__main__":
    forward, backward = fit(tail, 6), fit(slope_tail, 7)
    if "--check" in sys.argv:
        check(forward, backward)
    else:
        rust_table("TAIL", forward)
        rust_table("SLOPE_TAIL", backward)
