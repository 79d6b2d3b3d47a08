// ABN's attention mechanism (Fukui et al., CVPR 2019), per pixel p, with f the features (the
// paper's g(x), the op's argument g) and m[p] the attention map:
//   out[c, p] = (1 + m[p]) f[c, p]
// Backward, with d the incoming gradient:
//   grad_f[c, p] = (1 + m[p]) d[c, p]
//   grad_m[p]    = sum_c d[c, p] f[c, p]
#pragma once

#include "common.cuh"

namespace camfast::attention_branch_mix {

template <class A> CAMFAST_HD A gain(A m) { return A(1) + m; }

}  // namespace camfast::attention_branch_mix
