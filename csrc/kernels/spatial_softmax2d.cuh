// Spatial softmax and soft-argmax, per (n, c) row of P = H*W values, with z = x / T:
//   m = max(z) (NaN-propagating), s = sum exp(z - m), p = exp(z - m) / s
//   soft-argmax: (E_x, E_y) = sum p * (X[j], Y[i]) at pixel (i, j)
// Backward, with g the incoming gradient:
//   softmax:     grad_x = p * (g - sum g p) / T
//   soft-argmax: grad_x = p * (g_x X + g_y Y - (g_x E_x + g_y E_y)) / T
// A row holding NaN or +inf, or only -inf, is NaN throughout, as torch.softmax gives it: the max
// is then NaN or infinite and exp(z - m) is NaN where z equals it.
#pragma once

#include "common.cuh"

namespace camfast::spatial_softmax2d {

// 1 / T in the accumulation type: kernels multiply by it (x / T to within one rounding).
template <class A> CAMFAST_HD A inverse(double temperature) { return A(1.0 / temperature); }

// Coordinate of pixel k along an axis of `size` pixels: k itself in pixel units, else
// torch.linspace(-1, 1, size)[k] computed as torch computes it (from the nearer end). A
// normalized axis of size 1 has the single coordinate 0, the centre of [-1, 1].
template <class A> CAMFAST_HD A coordinate(int64_t k, int64_t size, bool normalized) {
  if (!normalized) return A(k);
  if (size == 1) return A(0);
  const A step = A(2) / A(size - 1);
  return k < size / 2 ? A(-1) + step * A(k) : A(1) - step * A(size - 1 - k);
}

// The part of the soft-argmax gradient shared by the whole row: g_x E_x + g_y E_y.
template <class A> CAMFAST_HD A expected_dot(A gx, A gy, A ex, A ey) { return gx * ex + gy * ey; }

CAMFAST_HD float exp_acc(float v) { return expf(v); }
CAMFAST_HD double exp_acc(double v) { return exp(v); }

// Whether a row's max leaves a defined softmax: NaN, +inf and an all -inf row do not.
template <class A> CAMFAST_HD bool finite_max(A m) { return m > lowest<A>() && m < -lowest<A>(); }

// Online accumulation of (m, s, sx, sy) for kernels that see each element once: one exp per
// element; the sums in double (sum_t), the exps and the max in A. A new maximum rescales the sums by exp(old - new); otherwise the element adds
// exp(z - m). A -inf element tying the initial -inf maximum adds 1, which a finite maximum later
// rescales by exp(-inf) = 0. NaN never becomes the maximum but makes the sums NaN.
template <class A> struct OnlineSums {
  A m = lowest<A>();
  sum_t s = 0, sx = 0, sy = 0;

  CAMFAST_HD void add(A z, A cx, A cy) {
    if (z > m) {
      const A d = exp_acc(m - z);
      s = s * d + 1;
      sx = sx * d + cx;
      sy = sy * d + cy;
      m = z;
    } else {
      const A e = z == m ? A(1) : exp_acc(z - m);
      s += e;
      sx += e * cx;
      sy += e * cy;
    }
  }
  CAMFAST_HD void merge(const OnlineSums& o) {
    const A top = o.m > m ? o.m : m;
    const A a = m == top ? A(1) : exp_acc(m - top);
    const A b = o.m == top ? A(1) : exp_acc(o.m - top);
    s = s * a + o.s * b;
    sx = sx * a + o.sx * b;
    sy = sy * a + o.sy * b;
    m = top;
  }
  // The row's sum of exp, NaN where torch.softmax gives NaN (see finite_max).
  CAMFAST_HD sum_t sum() const { return finite_max(m) ? s : quiet_nan<sum_t>(); }
};

}  // namespace camfast::spatial_softmax2d
