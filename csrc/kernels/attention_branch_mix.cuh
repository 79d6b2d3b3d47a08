// ABN's attention mechanism (Fukui et al., CVPR 2019), per pixel p with m[p] the attention map:
//   out[c, p] = (1 + m[p]) g[c, p]
// Backward, with d the incoming gradient:
//   grad_g[c, p] = (1 + m[p]) d[c, p]
//   grad_m[p]    = sum_c d[c, p] g[c, p]
#pragma once

#include "common.cuh"

namespace camfast::abn {

template <class A> CAMFAST_HD A gain(A m) { return A(1) + m; }

}  // namespace camfast::abn
