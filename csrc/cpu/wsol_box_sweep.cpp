// The MaxBoxAcc threshold sweep of camfast.wsol on the CPU: for every uint8 level k of every score
// map, the best IoU against the ground-truth boxes of the boxes OpenCV's contours of {q > k} give.
//
// OpenCV's findContours (RETR_TREE) returns one outer contour per 8-connected foreground component
// and one hole contour per 4-connected background region the foreground encloses; boundingRect of
// an outer contour is the component's bounding box, that of a hole contour the hole's bounding box
// grown by one pixel on every side. As k falls the foreground only grows (components merge), and as
// k rises the background only grows (holes merge, or reach the border and stop being holes). So two
// union-find sweeps over the pixels sorted by value (a counting sort: 256 buckets) give the boxes
// at all 256 levels in O(H W log(H W)) per map, instead of one findContours per threshold. Max-heaps
// with lazy deletion rank the live components, so each level reads its best one off the top.
//
// The "largest contour" of MaxBoxAcc v1 is the one of largest cv2.contourArea. Union-find tracks a
// lower bound of each outer contour's area and its bounding box bounds it above; where that does
// not single out one component, the level is reported unresolved and camfast/wsol asks OpenCV
// (see benchmarks/NOTES.md, "WSOL threshold sweep").
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <queue>
#include <tuple>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/Exception.h>

#include "../common/checks.h"
#include "../common/dispatch.h"

namespace camfast {
namespace {

using torch::stable::Tensor;

constexpr const char* kOp = "camfast::wsol_box_sweep";
constexpr int kLevels = 256;

struct Box {
  int64_t x0, y0, x1, y1;  // inclusive corners, the protocol's x0y0x1y1 convention
};

// calculate_multiple_iou of the protocol: inclusive areas, intersection clamped at 0, IoU 0 when
// the union is not positive; the division in double like NumPy's int64 true division.
double iou(const Box& a, const int64_t* gt) {
  const int64_t ix = std::max<int64_t>(0, std::min(a.x1, gt[2]) - std::max(a.x0, gt[0]) + 1);
  const int64_t iy = std::max<int64_t>(0, std::min(a.y1, gt[3]) - std::max(a.y0, gt[1]) + 1);
  const int64_t inter = ix * iy;
  const int64_t area_a = (a.x1 - a.x0 + 1) * (a.y1 - a.y0 + 1);
  const int64_t area_b = (gt[2] - gt[0] + 1) * (gt[3] - gt[1] + 1);
  const int64_t denominator = area_a + area_b - inter;
  return denominator <= 0 ? 0.0 : double(inter) / double(denominator);
}

// The map framed by one never-added pixel on each side: pixel (y, x) has index (y + 1) S + x + 1.
struct Padded {
  int64_t H, W;
  int64_t stride() const { return W + 2; }
  int64_t size() const { return (H + 2) * (W + 2); }
  int64_t index(int64_t y, int64_t x) const { return (y + 1) * stride() + x + 1; }
};

struct GroundTruth {
  const int64_t* boxes;  // [count, 4]
  int64_t count;
  double best_iou(const Box& b) const {
    double best = iou(b, boxes);
    for (int64_t g = 1; g < count; ++g) best = std::max(best, iou(b, boxes + 4 * g));
    return best;
  }
};

// Union-find over the pixels of one map, each root holding its component's bounding box, whether
// it touches the image border, and a version bumped whenever the component changes. Pixels that
// join an existing component never get a Node of their own: pixels arrive in value order, so
// their Nodes would be scattered writes. Pixels are indexed in the map framed by one row and
// column of never-added pixels on each side (Padded), so neighbours need no bounds checks.
class Forest {
 public:
  explicit Forest(const Padded& grid)
      : H_(grid.H), W_(grid.W), parent_(grid.size(), -1), node_(new Node[grid.size()]) {}

  // Empties the forest for the next pass; the buffers are reused, as fresh ones would cost a
  // page fault per 4 KB.
  void reset() { std::fill(parent_.begin(), parent_.end(), -1); }

  bool added(int64_t p) const { return parent_[p] >= 0; }
  int64_t parent(int64_t p) const { return parent_[p]; }
  bool is_root(int64_t p) const { return parent_[p] == p; }
  bool touches_border(int64_t r) const { return node_[r].border; }
  uint32_t version(int64_t r) const { return node_[r].version; }
  Box bbox(int64_t r) const { return {node_[r].x0, node_[r].y0, node_[r].x1, node_[r].y1}; }
  // Twice the area of the 2x2 pixel windows lying in the component: 2 per full window, 1 per
  // window with three pixels. OpenCV's contourArea of the outer contour is the same sum over
  // the component with its holes filled, so this is a lower bound of it.
  int64_t quads(int64_t r) const { return node_[r].quads; }
  void add_quads(int64_t r, int64_t delta) { node_[r].quads += int32_t(delta); }

  // Pixel p = (y, x) as a component of its own.
  void add(int64_t p, int16_t y, int16_t x) {
    parent_[p] = int32_t(p);
    node_[p] = Node{x, y, x, y, 1, 0, 0, on_border(x, y)};
  }

  // Pixel p = (y, x) joins the component of root r.
  void attach(int64_t p, int16_t y, int16_t x, int64_t r) {
    parent_[p] = int32_t(r);
    Node& root = node_[r];
    root.x0 = std::min(root.x0, x);
    root.y0 = std::min(root.y0, y);
    root.x1 = std::max(root.x1, x);
    root.y1 = std::max(root.y1, y);
    root.border |= on_border(x, y);
    ++root.size;
    ++root.version;
  }

  int64_t find(int64_t p) {
    while (parent_[p] != p) {
      parent_[p] = parent_[parent_[p]];  // path halving
      p = parent_[p];
    }
    return p;
  }

  // Merges root a with the component of b; returns the surviving root, or -1 if they were one.
  int64_t unite(int64_t a, int64_t b) {
    b = find(b);
    if (a == b) return -1;
    if (node_[a].size < node_[b].size) std::swap(a, b);
    parent_[b] = int32_t(a);
    Node &root = node_[a], &other = node_[b];
    root.size += other.size;
    root.x0 = std::min(root.x0, other.x0);
    root.y0 = std::min(root.y0, other.y0);
    root.x1 = std::max(root.x1, other.x1);
    root.y1 = std::max(root.y1, other.y1);
    root.quads += other.quads;
    root.border |= other.border;
    ++root.version;
    return a;
  }

 private:
  struct Node {
    int16_t x0, y0, x1, y1;
    int32_t size;
    uint32_t version;
    int32_t quads;
    bool border;
  };
  bool on_border(int64_t x, int64_t y) const { return x == 0 || y == 0 || x == W_ - 1 || y == H_ - 1; }

  int64_t H_, W_;
  std::vector<int32_t> parent_;
  std::unique_ptr<Node[]> node_;  // left uninitialised: a Node is written before it is read
};

// The roots a bucket created or changed, each once: a root is listed when its mark is older
// than the bucket. Buckets are numbered on across passes, so the marks never need clearing.
class Changed {
 public:
  explicit Changed(int64_t P) : mark_(P, -1) {}
  void start_bucket() {
    ++bucket_;
    roots_.clear();
  }
  void add(int64_t r) {
    if (mark_[r] != bucket_) {
      mark_[r] = bucket_;
      roots_.push_back(r);
    }
  }
  const std::vector<int64_t>& roots() const { return roots_; }

 private:
  std::vector<int32_t> mark_;
  int32_t bucket_ = -1;
  std::vector<int64_t> roots_;
};

// The live components ranked by a value (an IoU, an area); entries of components that merged or
// changed since they were pushed are dropped lazily.
class Ranking {
 public:
  struct Entry {
    double value;
    int64_t root;
    uint32_t version;
    bool operator<(const Entry& o) const { return std::tie(value, root) < std::tie(o.value, o.root); }
  };

  void push(double value, int64_t root, uint32_t version) { heap_.push({value, root, version}); }

  // The entry of largest value among the valid ones, or nullptr.
  template <class Valid> const Entry* top(const Valid& valid) {
    while (!heap_.empty() && !valid(heap_.top().root, heap_.top().version)) heap_.pop();
    return heap_.empty() ? nullptr : &heap_.top();
  }

  // The largest valid value of any root but `root`, or `none`.
  template <class Valid> double top_excluding(const Valid& valid, int64_t root, double none) {
    const Entry* first = top(valid);
    if (first == nullptr) return none;
    if (first->root != root) return first->value;
    const Entry kept = *first;
    heap_.pop();
    const Entry* second = top(valid);
    const double value = second == nullptr ? none : second->value;
    heap_.push(kept);
    return value;
  }

 private:
  std::priority_queue<Entry> heap_;
};

// Pixel indices sorted by value (framed indices, see Padded), and where each value's bucket starts.
struct Buckets {
  std::vector<int32_t> order;
  std::array<int64_t, kLevels + 1> start{};
  const int32_t* begin(int v) const { return order.data() + start[v]; }
  const int32_t* end(int v) const { return order.data() + start[v + 1]; }
};

void sort_by_value(const uint8_t* q, const Padded& grid, Buckets& b) {
  const int64_t P = grid.H * grid.W;
  b.order.resize(P);
  b.start.fill(0);
  for (int64_t p = 0; p < P; ++p) ++b.start[q[p] + 1];
  for (int v = 0; v < kLevels; ++v) b.start[v + 1] += b.start[v];
  std::array<int64_t, kLevels> next;
  std::copy(b.start.begin(), b.start.end() - 1, next.begin());
  for (int64_t y = 0; y < grid.H; ++y) {
    for (int64_t x = 0; x < grid.W; ++x) b.order[next[q[y * grid.W + x]]++] = int32_t(grid.index(y, x));
  }
}

// Twice the area one 2x2 window with `count` foreground pixels adds to Forest::quads.
constexpr int64_t kWindowArea2[5] = {0, 0, 0, 1, 2};

// How Forest::quads changes when pixel i joins: the four windows holding it gain a pixel. Windows
// reaching into the frame hold at most two pixels of the map and never count.
int64_t quads_gained(const Forest& forest, int64_t i, int64_t S) {
  int64_t delta = 0;
  for (int64_t corner : {i - S - 1, i - S, i - 1, i}) {
    int count = 1;  // the new pixel
    for (int64_t p : {corner, corner + 1, corner + S, corner + S + 1}) count += p != i && forest.added(p);
    delta += kWindowArea2[count] - kWindowArea2[count - 1];
  }
  return delta;
}

// Adds the pixels of one bucket to `forest`, joining each with its already-added neighbours (8 or
// 4 of them); lists in `changed` the roots whose component was created or changed, and returns
// how many components were gained (new ones minus unions).
template <int kConnectivity, bool kQuads>
int64_t add_bucket(Forest& forest, const Padded& grid, const int32_t* first, const int32_t* last, Changed& changed) {
  const int64_t S = grid.stride();
  const int64_t offsets[8] = {-1, -S, 1, S, -S - 1, -S + 1, S - 1, S + 1};
  int64_t gained = 0;
  std::vector<int64_t> touched;  // roots as they were when each pixel joined
  touched.reserve(last - first);
  for (const int32_t* it = first; it != last; ++it) {
    const int64_t i = *it;
    const int16_t y = int16_t(i / S - 1), x = int16_t(i % S - 1);
    // The pixels of a window are 8-neighbours, so after the unions below they share i's root.
    const int64_t quads = kQuads ? quads_gained(forest, i, S) : 0;
    int64_t root = -1;
    for (int d = 0; d < kConnectivity; ++d) {
      const int64_t n = i + offsets[d];
      const int64_t up = forest.parent(n);
      if (up < 0 || up == root) continue;  // not added, or already in i's component
      if (root < 0) {
        root = forest.find(n);
        forest.attach(i, y, x, root);
      } else if (const int64_t merged = forest.unite(root, n); merged >= 0) {
        root = merged;
        --gained;
      }
    }
    if (root < 0) {
      forest.add(i, y, x);
      root = i;
      ++gained;
    }
    if (kQuads) forest.add_quads(root, quads);
    if (touched.empty() || touched.back() != root) touched.push_back(root);
  }
  changed.start_bucket();
  for (int64_t r : touched) changed.add(forest.find(r));
  return gained;
}

// Outer contours: foreground {q > k} for k = 255 down to 0, adding the pixels of value k + 1.
// multi_contour: best_out[k] is the best IoU of any outer box. Otherwise it is the IoU of the
// contour of largest area, and resolved_out[k] says whether that contour is known: one
// component, or one whose area's lower bound (quads) beats every other's upper bound (its
// bounding box, where the contour's vertices lie).
void sweep_outer(const Buckets& b, const Padded& grid, const GroundTruth& gt, bool multi_contour, Forest& forest,
                 Changed& changed, double* best_out, bool* resolved_out) {
  const int64_t H = grid.H, W = grid.W;
  forest.reset();
  Ranking by_iou, by_area, by_span;
  const auto valid = [&](int64_t r, uint32_t v) { return forest.is_root(r) && forest.version(r) == v; };
  const auto box_of = [&](int64_t r) {
    const Box c = forest.bbox(r);
    return Box{c.x0, c.y0, std::min(c.x1 + 1, W - 1), std::min(c.y1 + 1, H - 1)};
  };
  const double empty_iou = gt.best_iou({0, 0, 0, 0});  // no contour: the protocol's box [0, 0, 0, 0]
  int64_t components = 0;
  for (int k = kLevels - 1; k >= 0; --k) {
    if (k + 1 < kLevels) {
      components += multi_contour ? add_bucket<8, false>(forest, grid, b.begin(k + 1), b.end(k + 1), changed)
                                  : add_bucket<8, true>(forest, grid, b.begin(k + 1), b.end(k + 1), changed);
      for (int64_t r : changed.roots()) {
        const uint32_t v = forest.version(r);
        if (multi_contour) {
          by_iou.push(gt.best_iou(box_of(r)), r, v);
        } else {
          const Box c = forest.bbox(r);
          by_area.push(double(forest.quads(r)), r, v);
          by_span.push(2.0 * double((c.x1 - c.x0) * (c.y1 - c.y0)), r, v);
        }
      }
    }
    resolved_out[k] = true;
    if (components == 0) {
      best_out[k] = empty_iou;
    } else if (multi_contour) {
      best_out[k] = by_iou.top(valid)->value;
    } else {
      const Ranking::Entry largest = *by_area.top(valid);
      resolved_out[k] = components == 1 || largest.value > by_span.top_excluding(valid, largest.root, -1.0);
      best_out[k] = resolved_out[k] ? gt.best_iou(box_of(largest.root)) : 0.0;
    }
  }
}

// Hole contours: background {q <= k} for k = 0 up to 255, adding the pixels of value k. A hole is
// a background component that does not touch the image border; best_out[k] becomes the larger of
// itself and the best IoU of a hole's box.
void sweep_holes(const Buckets& b, const Padded& grid, const GroundTruth& gt, Forest& forest, Changed& changed,
                 double* best_out) {
  const int64_t H = grid.H, W = grid.W;
  forest.reset();
  Ranking by_iou;
  const auto valid = [&](int64_t r, uint32_t v) {
    return forest.is_root(r) && forest.version(r) == v && !forest.touches_border(r);
  };
  for (int k = 0; k < kLevels; ++k) {
    add_bucket<4, false>(forest, grid, b.begin(k), b.end(k), changed);
    for (int64_t r : changed.roots()) {
      if (forest.touches_border(r)) continue;
      const Box h = forest.bbox(r);
      by_iou.push(gt.best_iou({h.x0 - 1, h.y0 - 1, std::min(h.x1 + 2, W - 1), std::min(h.y1 + 2, H - 1)}), r,
                  forest.version(r));
    }
    if (const Ranking::Entry* hole = by_iou.top(valid)) best_out[k] = std::max(best_out[k], hole->value);
  }
}

// q [B, H, W] uint8; gt_boxes [B, G, 4] int64 (x0, y0, x1, y1, inclusive); gt_count [B] int64, the
// number of valid rows of gt_boxes per map (>= 1). Returns, for every map and level k in 0..255,
// the best IoU against the ground truth of the boxes of {q > k}: all contours' boxes with
// multi_contour, else the box of the contour of largest area, and whether that contour was
// resolved here (where not, the caller asks OpenCV; the IoU is 0 there).
std::tuple<Tensor, Tensor> wsol_box_sweep_cpu(Tensor q, Tensor gt_boxes, Tensor gt_count, bool multi_contour) {
  const ArgCheck check(kOp, q, "q", 3, {ScalarType::Byte});
  const int64_t B = q.size(0), H = q.size(1), W = q.size(2);
  check(gt_boxes, "gt_boxes", {B, kAnySize, 4}, {ScalarType::Long});
  check(gt_count, "gt_count", {B}, {ScalarType::Long});
  const int64_t G = gt_boxes.size(1);
  STD_TORCH_CHECK(H < (1 << 15) && W < (1 << 15), kOp, ": maps of 2^15 rows or columns or more are not supported");
  q = torch::stable::contiguous(q);
  gt_boxes = torch::stable::contiguous(gt_boxes);
  gt_count = torch::stable::contiguous(gt_count);
  Tensor best = torch::stable::new_empty(q, {B, kLevels}, ScalarType::Double);
  Tensor resolved = torch::stable::new_empty(q, {B, kLevels}, ScalarType::Bool);
  const uint8_t* qp = q.const_data_ptr<uint8_t>();
  const int64_t* gp = gt_boxes.const_data_ptr<int64_t>();
  const int64_t* cp = gt_count.const_data_ptr<int64_t>();
  for (int64_t n = 0; n < B; ++n) {
    STD_TORCH_CHECK(cp[n] >= 1 && cp[n] <= G, kOp, ": gt_count must lie in [1, G]");
  }
  double* bp = best.mutable_data_ptr<double>();
  bool* rp = resolved.mutable_data_ptr<bool>();
  const Padded grid{H, W};
  // Maps are handed out one at a time rather than in equal runs per thread: their cost varies,
  // and so does a shared machine's speed per core.
  std::atomic<int64_t> next_map{0};
  torch::stable::parallel_for(0, B, 1, [&](int64_t, int64_t) {
    Forest forest(grid);  // one workspace per thread, reused across its maps
    Changed changed(grid.size());
    Buckets buckets;
    for (int64_t n = next_map++; n < B; n = next_map++) {
      const GroundTruth gt{gp + n * G * 4, cp[n]};
      sort_by_value(qp + n * H * W, grid, buckets);
      sweep_outer(buckets, grid, gt, multi_contour, forest, changed, bp + n * kLevels, rp + n * kLevels);
      if (multi_contour) sweep_holes(buckets, grid, gt, forest, changed, bp + n * kLevels);
    }
  });
  return {best, resolved};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(camfast, CPU, m) {
  m.impl("wsol_box_sweep", TORCH_BOX(&wsol_box_sweep_cpu));
}

}  // namespace camfast
