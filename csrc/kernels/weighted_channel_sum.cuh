// The raw map of the gradient CAM methods, per image (class t, sample n) with A = act[n] and
// g = grad[t, n], K maps of P = h * w values each:
//   weighted methods: a weight per channel from its spatial sums, then map = ReLU(sum_k w_k A_k)
//     grad-cam:             w = sum g / P
//     xgrad-cam:            w = sum g A / (sum A + eps)
//     grad-cam++:           S = sum A; alpha = g^2 / (2 g^2 + S g^3) (a zero denominator counts as 1);
//                           w = sum alpha ReLU(g) / sum alpha (a zero sum counts as 1)
//     grad-cam++/grad-cam:  alpha = g^2 / (2 g^2 + S g^3 + 1e-6), 0 where g == 0; w = sum alpha ReLU(g)
//   element-wise methods: map = ReLU(sum_k phi(g_k, A_k)), pixel by pixel
//     hires-cam: g A;   element-wise: ReLU(g A);   layer-cam: ReLU(g) A
// Each weight is num / den of two spatial sums (and, for Grad-CAM++, of S summed first), so one
// pass over a channel's map gives its weight.
#pragma once

#include "common.cuh"

namespace camfast::weighted_channel_sum {

enum class Method : int { grad_cam, xgrad_cam, grad_cam_pp, grad_cam_pp_gradcam, hires_cam, element_wise, layer_cam };

// Grad-CAM++ needs S = sum A before its alphas.
CAMFAST_HD constexpr bool needs_s(Method m) { return m == Method::grad_cam_pp || m == Method::grad_cam_pp_gradcam; }
CAMFAST_HD constexpr bool weighted(Method m) { return m == Method::grad_cam || m == Method::xgrad_cam || needs_s(m); }
// Whether the weight divides by a second sum.
CAMFAST_HD constexpr bool needs_den(Method m) { return m == Method::xgrad_cam || m == Method::grad_cam_pp; }

// max(v, 0), NaN kept (as torch.relu). Written so that GCC if-converts it after a float-to-double
// conversion too (`v < 0 ? 0 : v` stays a branch there, which on random signs costs 5-10x).
template <class A> CAMFAST_HD A relu(A v) { return (v >= A(0) || v != v) ? v : A(0); }

// Grad-CAM++'s alpha, in the order the reference evaluates it: 2 g^2 + (S g^2) g. Written so that
// GCC vectorises the loops: no division under a condition (it may trap, so GCC keeps a branch),
// and denom + [denom == 0] for "a zero denominator counts as 1" (NaN stays NaN).
template <Method M, class A> CAMFAST_HD A alpha(A g, A s) {
  const A g2 = g * g;
  const A denom = A(2) * g2 + s * g2 * g;
  if constexpr (M == Method::grad_cam_pp) {
    return g2 / (denom + A(denom == A(0)));
  } else {
    const A value = g2 / (denom + A(1e-6));
    return g != A(0) ? value : A(0);
  }
}

// The terms of a channel's two spatial sums at one pixel (s: the channel's sum of A, Grad-CAM++ only).
template <Method M, class A> CAMFAST_HD A numerator(A g, A a, A s) {
  if constexpr (M == Method::grad_cam) {
    return g;
  } else if constexpr (M == Method::xgrad_cam) {
    return g * a;
  } else {
    return alpha<M>(g, s) * relu(g);
  }
}
template <Method M, class A> CAMFAST_HD A denominator(A g, A a, A s) {
  if constexpr (M == Method::xgrad_cam) {
    return a;
  } else {
    return alpha<M>(g, s);  // grad-cam++ (the other methods have no denominator)
  }
}

// A channel's weight from its sums over P pixels.
template <Method M, class A> CAMFAST_HD A weight(A num, A den, int64_t P, A eps) {
  if constexpr (M == Method::grad_cam) {
    return num / A(P);
  } else if constexpr (M == Method::xgrad_cam) {
    return num / (den + eps);
  } else if constexpr (M == Method::grad_cam_pp) {
    return num / (den != A(0) ? den : A(1));
  } else {
    return num;
  }
}

// One pixel's term of the channel sum for the element-wise methods.
template <Method M, class A> CAMFAST_HD A term(A g, A a) {
  if constexpr (M == Method::hires_cam) {
    return g * a;
  } else if constexpr (M == Method::element_wise) {
    return relu(g * a);
  } else {
    return relu(g) * a;  // layer-cam
  }
}

}  // namespace camfast::weighted_channel_sum
