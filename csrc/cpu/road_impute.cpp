// ROAD's linear imputation on the CPU: the same preconditioned conjugate gradient as
// camfast/metrics/imputation.py (read its docstring for the equations), with every sweep fused.
//
// Each imputed pixel i satisfies d_i x_i - sum_{j imputed} w_ij x_j = sum_{j known} w_ij g_j,
// w = 1/6 for edge neighbours, 1/12 for diagonal ones, d_i the sum of i's in-image weights. The
// operator is stored per level as a diagonal and eight coefficient planes on a grid framed by one
// zero pixel on every side, so a sweep reads its 8 neighbours without bounds checks. The
// preconditioner is one symmetric V-cycle of aggregation multigrid (2 x 2 blocks, Galerkin coarse
// operators, one damped Jacobi sweep before and after each scaled coarse correction). Every image's
// hierarchy is built once and serves its C channels; images are solved in parallel, in float64.
//
// Every field vanishes outside the pixels with a positive diagonal (the imputed pixels and the
// coarse blocks holding them), and stays so: each level keeps, per row, the span from its first
// to its last such pixel, and every sweep and vector update runs over those spans only. On CAM
// masks the spans hold about 56% of the pixels (ROAD's percentiles impute 10-90% of an image).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/Exception.h>

#include "../common/checks.h"
#include "../common/dispatch.h"

namespace camfast::road_impute {
namespace {

using torch::stable::Tensor;

constexpr const char* kOp = "camfast::road_impute";
constexpr double kDamping = 0.8;      // JACOBI_DAMPING in imputation.py
constexpr double kCoarseScale = 1.8;  // COARSE_SCALE in imputation.py
constexpr int kNeighbours = 8;
constexpr int kDy[kNeighbours] = {-1, -1, -1, 0, 0, 1, 1, 1};
constexpr int kDx[kNeighbours] = {-1, 0, 1, -1, 1, -1, 0, 1};

double weight(int k) { return kDy[k] != 0 && kDx[k] != 0 ? 1.0 / 12 : 1.0 / 6; }

// One level: fields of (h + 2) x (w + 2) values, the frame always zero.
struct Level {
  int64_t h, w, stride;
  std::vector<double> diag, inv_diag;
  std::array<std::vector<double>, kNeighbours> coef;  // coef[k][i]: coupling of i with i + offset k
  std::vector<double> z, r, t;                         // V-cycle work fields
  // The fine level's coefficients are the constant weights where both pixels are imputed; it keeps
  // only the mask (1 byte a pixel instead of 64 for eight coefficient planes) and relies on the
  // fields it is applied to vanishing outside the imputed pixels, as every CG and V-cycle field does.
  std::vector<uint8_t> imputed;
  std::vector<int64_t> span_begin, span_end;  // per row: field indices of the first and past the last
                                              // pixel with a positive diagonal (equal when none)

  Level(int64_t h_, int64_t w_) : h(h_), w(w_), stride(w_ + 2) {
    const size_t n = size_t((h + 2) * stride);
    diag.assign(n, 0.0);
    inv_diag.assign(n, 0.0);
    for (auto& c : coef) c.assign(n, 0.0);
    z.assign(n, 0.0);
    r.assign(n, 0.0);
    t.assign(n, 0.0);
  }
  int64_t at(int64_t y, int64_t x) const { return (y + 1) * stride + x + 1; }
  int64_t offset(int k) const { return kDy[k] * stride + kDx[k]; }
  void finish() {
    for (size_t i = 0; i < diag.size(); ++i) inv_diag[i] = diag[i] > 0 ? 1.0 / diag[i] : 0.0;
    span_begin.assign(size_t(h), 0);
    span_end.assign(size_t(h), 0);
    for (int64_t y = 0; y < h; ++y) {
      int64_t first = at(y, w), last = at(y, 0) - 1;
      for (int64_t i = at(y, 0); i < at(y, w); ++i) {
        if (diag[i] > 0) {
          first = std::min(first, i);
          last = i;
        }
      }
      span_begin[size_t(y)] = first;
      span_end[size_t(y)] = std::max(first, last + 1);
    }
  }
  // f(begin, end) for each row's span.
  template <class F> void for_spans(F f) const {
    for (int64_t y = 0; y < h; ++y) f(span_begin[size_t(y)], span_end[size_t(y)]);
  }

  // out = A x, or out = minus_from - A x.
  void apply(const double* x, double* out) const { sweep<false>(x, out, nullptr); }
  void residual(const double* x, double* out, const double* minus_from) const { sweep<true>(x, out, minus_from); }

  template <bool kMinus> void sweep(const double* x, double* out, const double* minus_from) const {
    if (!imputed.empty()) return fine_sweep<kMinus>(x, out, minus_from);
    const double *c0 = coef[0].data(), *c1 = coef[1].data(), *c2 = coef[2].data(), *c3 = coef[3].data();
    const double *c4 = coef[4].data(), *c5 = coef[5].data(), *c6 = coef[6].data(), *c7 = coef[7].data();
    const double* d = diag.data();
    const int64_t s = stride;
    for (int64_t y = 0; y < h; ++y) {
#pragma omp simd
      for (int64_t i = span_begin[size_t(y)]; i < span_end[size_t(y)]; ++i) {
        const double a = d[i] * x[i] - (c0[i] * x[i - s - 1] + c1[i] * x[i - s] + c2[i] * x[i - s + 1] +
                                        c3[i] * x[i - 1] + c4[i] * x[i + 1] + c5[i] * x[i + s - 1] +
                                        c6[i] * x[i + s] + c7[i] * x[i + s + 1]);
        out[i] = kMinus ? minus_from[i] - a : a;
      }
    }
  }

  template <bool kMinus> void fine_sweep(const double* x, double* out, const double* minus_from) const {
    const double* d = diag.data();
    const uint8_t* m = imputed.data();
    const int64_t s = stride;
    constexpr double kEdge = 1.0 / 6, kCorner = 1.0 / 12;
    for (int64_t y = 0; y < h; ++y) {
#pragma omp simd
      for (int64_t i = span_begin[size_t(y)]; i < span_end[size_t(y)]; ++i) {
        const double edges = x[i - s] + x[i - 1] + x[i + 1] + x[i + s];
        const double corners = x[i - s - 1] + x[i - s + 1] + x[i + s - 1] + x[i + s + 1];
        const double a = double(m[i]) * (d[i] * x[i] - kEdge * edges - kCorner * corners);
        out[i] = kMinus ? minus_from[i] - a : a;
      }
    }
  }
};

// The fine operator for one image's mask (unknown[y * W + x] true where the pixel is imputed).
Level fine_level(const bool* unknown, int64_t H, int64_t W) {
  Level level(H, W);
  for (int64_t y = 0; y < H; ++y) {
    for (int64_t x = 0; x < W; ++x) {
      if (!unknown[y * W + x]) continue;
      const int64_t i = level.at(y, x);
      double d = 0;
      for (int k = 0; k < kNeighbours; ++k) {
        const int64_t ny = y + kDy[k], nx = x + kDx[k];
        if (ny < 0 || ny >= H || nx < 0 || nx >= W) continue;
        d += weight(k);
        if (unknown[ny * W + nx]) level.coef[k][i] = weight(k);
      }
      level.diag[i] = d;
    }
  }
  level.finish();
  level.imputed.assign(level.diag.size(), 0);
  for (size_t i = 0; i < level.diag.size(); ++i) level.imputed[i] = level.diag[i] > 0;
  return level;
}

// P^T A P for P the piecewise-constant prolongation from 2 x 2 blocks.
Level coarsen(const Level& fine) {
  Level coarse((fine.h + 1) / 2, (fine.w + 1) / 2);
  for (int64_t y = 0; y < fine.h; ++y) {
    for (int64_t x = 0; x < fine.w; ++x) {
      const int64_t i = fine.at(y, x);
      const int64_t I = coarse.at(y / 2, x / 2);
      coarse.diag[I] += fine.diag[i];
      for (int k = 0; k < kNeighbours; ++k) {
        const double c = fine.coef[k][i];
        if (c == 0) continue;
        // The neighbour's block relative to this block: floor((y + dy) / 2) - y / 2, in {-1, 0, 1}.
        const int by = int((y + kDy[k] + 2) / 2 - 1 - y / 2), bx = int((x + kDx[k] + 2) / 2 - 1 - x / 2);
        if (by == 0 && bx == 0) {
          coarse.diag[I] -= c;
        } else {
          const int K = (by + 1) * 3 + (bx + 1) - ((by + 1) * 3 + (bx + 1) > 4 ? 1 : 0);
          coarse.coef[K][I] += c;
        }
      }
    }
  }
  for (double& d : coarse.diag) d = std::max(d, 0.0);
  coarse.finish();
  return coarse;
}

struct Hierarchy {
  std::vector<Level> levels;
  explicit Hierarchy(Level fine) {
    levels.push_back(std::move(fine));
    while (levels.back().h > 1 || levels.back().w > 1) levels.push_back(coarsen(levels.back()));
  }

  // z = M r on level l (both fields of that level; r is read only).
  void vcycle(size_t l, const double* r, double* z) {
    Level& L = levels[l];
    const size_t n = L.diag.size();
    if (l + 1 == levels.size()) {
      for (size_t i = 0; i < n; ++i) z[i] = r[i] * L.inv_diag[i];
      return;
    }
    const double* inv = L.inv_diag.data();
    L.for_spans([&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) z[i] = kDamping * r[i] * inv[i];
    });
    L.residual(z, L.t.data(), r);  // t = r - A z
    Level& C = levels[l + 1];
    std::fill(C.r.begin(), C.r.end(), 0.0);
    for (int64_t y = 0; y < L.h; ++y)
      for (int64_t i = L.span_begin[size_t(y)]; i < L.span_end[size_t(y)]; ++i) {
        const int64_t x = i - L.at(y, 0);
        C.r[C.at(y / 2, x / 2)] += L.t[i];
      }
    vcycle(l + 1, C.r.data(), C.z.data());
    for (int64_t y = 0; y < L.h; ++y)
      for (int64_t i = L.span_begin[size_t(y)]; i < L.span_end[size_t(y)]; ++i) {
        const int64_t x = i - L.at(y, 0);
        if (L.diag[i] > 0) z[i] += kCoarseScale * C.z[C.at(y / 2, x / 2)];
      }
    L.residual(z, L.t.data(), r);
    const double* t = L.t.data();
    L.for_spans([&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) z[i] += kDamping * t[i] * inv[i];
    });
  }
};

// sum a_i b_i over the level's spans (both fields vanish elsewhere).
double dot(const Level& L, const std::vector<double>& a, const std::vector<double>& b) {
  const double *pa = a.data(), *pb = b.data();
  double s = 0;
  L.for_spans([&](int64_t begin, int64_t end) {
#pragma omp simd reduction(+ : s)
    for (int64_t i = begin; i < end; ++i) s += pa[i] * pb[i];
  });
  return s;
}

// Solve one channel: g the image plane [H, W] (known values), result written into out [H, W].
void solve_channel(Hierarchy& mg, const bool* unknown, const double* g, double* out, double rtol, int64_t max_iter) {
  Level& A = mg.levels[0];
  const int64_t H = A.h, W = A.w;
  const size_t n = A.diag.size();
  std::vector<double> b(n, 0.0), x(n, 0.0), r, z(n), p, ap(n);
  // b_i = sum over known neighbours j of w_ij g_j, for imputed i.
  for (int64_t y = 0; y < H; ++y)
    for (int64_t xx = 0; xx < W; ++xx) {
      if (!unknown[y * W + xx]) continue;
      double s = 0;
      for (int k = 0; k < kNeighbours; ++k) {
        const int64_t ny = y + kDy[k], nx = xx + kDx[k];
        if (ny >= 0 && ny < H && nx >= 0 && nx < W && !unknown[ny * W + nx]) s += weight(k) * g[ny * W + nx];
      }
      b[A.at(y, xx)] = s;
    }
  r = b;
  mg.vcycle(0, r.data(), z.data());
  p = z;
  double rz = dot(A, r, z);
  const double limit = rtol * std::sqrt(dot(A, b, b));
  double rr = dot(A, r, r);
  double *px = x.data(), *pr = r.data(), *pp = p.data(), *pz = z.data();
  const double* pap_field = ap.data();
  for (int64_t it = 0; it < max_iter && std::sqrt(rr) > limit; ++it) {
    A.apply(pp, ap.data());
    const double pap = dot(A, p, ap);
    if (!(pap > 0)) break;
    const double alpha = rz / pap;
    rr = 0;
    A.for_spans([&](int64_t begin, int64_t end) {
#pragma omp simd reduction(+ : rr)
      for (int64_t i = begin; i < end; ++i) {
        px[i] += alpha * pp[i];
        pr[i] -= alpha * pap_field[i];
        rr += pr[i] * pr[i];
      }
    });
    mg.vcycle(0, pr, pz);
    const double rz_next = dot(A, r, z);
    const double beta = rz > 0 ? rz_next / rz : 0.0;
    rz = rz_next;
    A.for_spans([&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) pp[i] = pz[i] + beta * pp[i];
    });
  }
  for (int64_t y = 0; y < H; ++y)
    for (int64_t xx = 0; xx < W; ++xx) out[y * W + xx] = unknown[y * W + xx] ? x[A.at(y, xx)] : g[y * W + xx];
}

// images [B, C, H, W] float64; unknown [B, H, W] bool. Returns the images with the unknown pixels
// imputed (no noise), float64.
Tensor road_impute_cpu(Tensor images, Tensor unknown, double rtol, int64_t max_iter) {
  const ArgCheck check(kOp, images, "images", 4, {ScalarType::Double});
  const int64_t B = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  check(unknown, "unknown", {B, H, W}, {ScalarType::Bool});
  images = torch::stable::contiguous(images);
  unknown = torch::stable::contiguous(unknown);
  Tensor out = torch::stable::new_empty(images, {B, C, H, W}, ScalarType::Double);
  const double* gp = images.const_data_ptr<double>();
  const bool* up = unknown.const_data_ptr<bool>();
  double* op = out.mutable_data_ptr<double>();
  torch::stable::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const bool* mask = up + n * H * W;
      Hierarchy mg(fine_level(mask, H, W));
      for (int64_t c = 0; c < C; ++c) {
        const int64_t plane = (n * C + c) * H * W;
        solve_channel(mg, mask, gp + plane, op + plane, rtol, max_iter);
      }
    }
  });
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CPU, m) {
  m.impl("road_impute", TORCH_BOX(&road_impute_cpu));
}

}  // namespace camfast::road_impute
