// GGAM channel-spatial attention (arXiv 2101.09666), per sample and pixel p of the H*W map:
//   z[p] = sum_c s[c] a[c, p]
//   t = sigmoid(z)  or  t = softmax over p of z
//   out[c, p] = a[c, p] t[p]
// Backward, with g the incoming gradient and r[p] = sum_c g[c, p] a[c, p] (the gradient of t):
//   u = t (1 - t) r             (sigmoid: the gradient of z)
//   u = t (r - sum_p t r)       (softmax)
//   grad_a[c, p] = g[c, p] t[p] + s[c] u[p]
//   grad_s[c]    = sum_p u[p] a[c, p]
#pragma once

#include "common.cuh"

namespace camfast::channel_spatial_attention {

// The gradient of z under the sigmoid; written as autograd's sigmoid backward orders it, so that
// t = 1 with r = inf gives NaN exactly where the reference does.
template <class A> CAMFAST_HD A sigmoid_grad(A t, A r) { return r * ((A(1) - t) * t); }

template <class A> CAMFAST_HD A softmax_grad(A t, A r, A sum_tr) { return t * (r - sum_tr); }

template <class A> CAMFAST_HD A input_grad(A g, A t, A s, A u) { return g * t + s * u; }

}  // namespace camfast::channel_spatial_attention
