// Score-CAM masked inputs (Wang et al., CVPR-W 2020), per activation map A = act[n, k] of h x w
// values and image[n] of C x H x W:
//   up  = bilinear upsample of A to H x W, F.interpolate's arithmetic (taps and weights below)
//   "upsampled": M = (up - min up) / (max up - min up)      "feature": M = up((A - min A) / (max A - min A))
//   out[n, k, c] = M * image[n, c];  M = 0 for a constant map (max A == min A, or max up == min up
//   at the "upsampled" stage).
// Both stages are one formula: each tap of A is mapped by (a - src_lo) / src_span before the
// interpolation and the result by (up - up_lo) / up_span after it; the unused stage keeps lo = 0,
// span = 1, which leaves every value bit-identical.
#pragma once

#include "common.cuh"

namespace camfast::score_cam_masks {

// The two source samples of one output coordinate and their weights.
template <class A> struct Tap {
  int64_t i0, i1;
  A w0, w1;
};

// F.interpolate's bilinear source scale along one axis: in / out, or (in - 1) / (out - 1) with
// align_corners, in the type A of torch's opmath (computed once per axis, not per pixel).
template <class A> CAMFAST_HD A source_scale(int64_t in, int64_t out, bool align_corners) {
  if (align_corners) return out > 1 ? A(in - 1) / A(out - 1) : A(0);
  return A(in) / A(out);
}

// The two source samples of output coordinate dst and their weights, as F.interpolate computes
// them (area_pixel_compute_source_index, then the index clamped and the weight kept in [0, 1]).
template <class A> CAMFAST_HD Tap<A> linear_tap(int64_t in, int64_t out, A scale, bool align_corners, int64_t dst) {
  if (in == out) return {dst, dst, A(1), A(0)};
  A src = align_corners ? scale * A(dst) : scale * (A(dst) + A(0.5)) - A(0.5);
  if (src < A(0)) src = A(0);
  int64_t i0 = int64_t(floor(src));
  if (i0 > in - 1) i0 = in - 1;
  A lambda = src - A(i0);
  lambda = lambda < A(0) ? A(0) : (lambda > A(1) ? A(1) : lambda);
  return {i0, i0 + (i0 < in - 1 ? 1 : 0), A(1) - lambda, lambda};
}

template <class A> CAMFAST_HD A lerp(A v0, A v1, const Tap<A>& t) { return v0 * t.w0 + v1 * t.w1; }

// NaN-propagating running minimum and maximum of a map.
template <class A> struct Extrema {
  A lo = -lowest<A>();
  A hi = lowest<A>();
  bool has_nan = false;

  CAMFAST_HD void add(A v) {
    has_nan |= (v != v);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  CAMFAST_HD void merge(const Extrema& o) {
    has_nan |= o.has_nan;
    lo = o.lo < lo ? o.lo : lo;
    hi = o.hi > hi ? o.hi : hi;
  }
  CAMFAST_HD A low() const { return has_nan ? quiet_nan<A>() : lo; }
  CAMFAST_HD A high() const { return has_nan ? quiet_nan<A>() : hi; }
  // max == min, as the authors test it (false for NaN maps; true for a map of one infinity).
  CAMFAST_HD bool constant() const { return !has_nan && lo == hi; }
};

// What the output pass needs of one map.
template <class A> struct MapStats {
  A src_lo = A(0), src_span = A(1);  // "feature" stage: A's extrema
  A up_lo = A(0), up_span = A(1);    // "upsampled" stage: up's extrema
  bool constant = false;

  CAMFAST_HD A source(A a) const { return (a - src_lo) / src_span; }
  CAMFAST_HD A mask(A up) const { return constant ? A(0) : (up - up_lo) / up_span; }
};

// The statistics after the source pass: at the "feature" stage they are final; at the
// "upsampled" stage a non-constant map still needs up's extrema (with_upsampled below).
template <class A> CAMFAST_HD MapStats<A> source_stats(const Extrema<A>& e, bool feature) {
  MapStats<A> s;
  s.constant = e.constant();
  if (feature && !s.constant) {  // a constant map keeps span 1: no 0 / 0 is ever computed
    s.src_lo = e.low();
    s.src_span = e.high() - e.low();
  }
  return s;
}

template <class A> CAMFAST_HD void with_upsampled(MapStats<A>& s, const Extrema<A>& e) {
  s.constant = s.constant || e.constant();
  s.up_lo = e.low();
  s.up_span = e.high() - e.low();
}

}  // namespace camfast::score_cam_masks
