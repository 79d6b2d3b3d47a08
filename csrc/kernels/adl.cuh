// Attention-based dropout (Choe and Shim, CVPR 2019), per sample n and pixel p:
//   a    = mean over channels of x                 (rounded to the input dtype, like torch.mean)
//   s    = sigmoid(a)                              (importance branch)
//   mask = [a < threshold * max_p a]               (drop branch; NaN-propagating max, strict <)
//   out  = x * selected, selected = mask or s as the sample's branch says, broadcast over C.
// Backward: grad_x = g * selected + shift, where shift = 0 in the drop branch (the mask is a
// constant) and shift = s (1 - s) / C * sum_c g[c] x[c] in the importance branch.
#pragma once

#include "common.cuh"

namespace camfast::adl {

template <class T> CAMFAST_HD T channel_mean(sum_t sum, int64_t channels) { return T(sum / sum_t(channels)); }

template <class T> CAMFAST_HD T importance(T a) { return T(sigmoid(acc_t<T>(a))); }

// Rounded to the input dtype, as torch rounds `a.amax() * threshold`, so that `a < t` selects
// exactly what the reference selects.
template <class T> CAMFAST_HD T threshold(acc_t<T> sample_max, double ratio) {
  return T(sample_max * acc_t<T>(ratio));
}

template <class T> CAMFAST_HD T drop_mask(T a, T t) { return T(acc_t<T>(a) < acc_t<T>(t) ? 1 : 0); }

// d out / d a summed over channels, divided by C: what every channel of the pixel gains.
template <class A> CAMFAST_HD A importance_shift(A s, A dot, int64_t channels) {
  return s * (A(1) - s) * dot / A(channels);
}

// out = x * selected (forward, shift 0) and grad_x = g * selected + shift (backward).
template <class T, class A> CAMFAST_HD T scaled(A v, A selected, A shift) { return T(v * selected + shift); }

}  // namespace camfast::adl
