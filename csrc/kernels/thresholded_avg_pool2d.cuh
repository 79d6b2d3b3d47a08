// Thresholded average pooling (Bae et al., ECCV 2020), per (n, c) row of H*W values:
//   t   = tau * max(row)                       (NaN-propagating max, IEEE product: 0 * inf = NaN)
//   out = sum(x[x > t]) / max(1, #{x > t and x > 0})
// Backward: grad_x = grad_out / max(1, count) where x > t, else 0. The selection and the count
// are constants, exactly as in the authors' autograd graph.
#pragma once

#include "common.cuh"

namespace camfast::thresholded_avg_pool2d {

// Rounded to the input dtype, as torch rounds `x.amax() * tau`, so that the selection `x > t` is
// bit-identical to the reference in every dtype.
template <class T> CAMFAST_HD T threshold(acc_t<T> row_max, double tau) {
  return T(row_max * acc_t<T>(tau));
}

template <class A> CAMFAST_HD A kept_value(A v, A t) { return v > t ? v : A(0); }

// The authors count positive entries of the thresholded map; with tau in [0, 1] that equals the
// number of kept entries, but the rule is kept literally. (`&`, not `&&`: no branch, vectorises.)
template <class A> CAMFAST_HD int32_t counted(A v, A t) { return int32_t((v > t) & (v > A(0))); }

CAMFAST_HD int32_t divisor(int32_t count) { return count > 0 ? count : 1; }

template <class T, class A> CAMFAST_HD T mean(A sum, int32_t count) { return T(sum / A(divisor(count))); }

// The gradient every kept entry of the row receives, rounded to T like autograd's grad / count.
template <class T> CAMFAST_HD T kept_grad(T grad_out, int32_t count) {
  return T(acc_t<T>(grad_out) / acc_t<T>(divisor(count)));
}

template <class T> CAMFAST_HD T input_grad(acc_t<T> v, acc_t<T> t, T kept) { return v > t ? kept : T(0); }

}  // namespace camfast::thresholded_avg_pool2d
