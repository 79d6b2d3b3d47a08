// Thread tiles for the CUDA kernels that mix channels at each pixel (GGAM, ABN).
//
// A block is (kLanes, kGroups) threads. Lanes run along the axis that is contiguous in memory so
// loads coalesce: pixels in NCHW, channels when channels are innermost (kChannelsInner). PixelTile
// gives a block a run of pixels of one sample and each thread its pixel and its share of the
// channels; ChannelTile gives a block a run of channels and each thread its share of the pixels.
#pragma once

#include "cuda_utils.cuh"

namespace camfast::cuda {

constexpr int kLanes = kWarp;
constexpr int kGroups = 8;
const dim3 kTileBlock(kLanes, kGroups);

// v combined with op over the block's lanes (kAcrossLanes) or over its groups; every thread of
// a lane (respectively group) gets the result, combined in the same order.
template <bool kAcrossLanes, class A, class Op> __device__ __forceinline__ A tile_reduce(A v, Op op) {
  if constexpr (kAcrossLanes) {
    for (int offset = kLanes / 2; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
  } else {
    __shared__ A part[kGroups][kLanes];
    __syncthreads();  // an earlier call may still be reading
    part[threadIdx.y][threadIdx.x] = v;
    __syncthreads();
    A total = part[0][threadIdx.x];
    for (int i = 1; i < kGroups; ++i) total = op(total, part[i][threadIdx.x]);
    return total;
  }
}

struct Plus {
  template <class A> __device__ A operator()(A a, A b) const { return a + b; }
};

template <bool kAcrossLanes, class A> __device__ __forceinline__ A tile_sum(A v) {
  return tile_reduce<kAcrossLanes>(v, Plus{});
}

// The sum over the whole block.
template <class A> __device__ __forceinline__ A block_sum(A v) { return tile_sum<false>(tile_sum<true>(v)); }

// The NaN-propagating maximum over the whole block.
template <class A> __device__ __forceinline__ A block_max(NanMax<A> m) {
  auto larger = [](A a, A b) { return b > a ? b : a; };
  const A top = tile_reduce<false>(tile_reduce<true>(m.value, larger), larger);
  return block_sum(A(m.has_nan)) > A(0) ? quiet_nan<A>() : top;
}

template <bool kChannelsInner> struct PixelTile {
  static constexpr int kPixels = kChannelsInner ? kGroups : kLanes;  // pixels per block
  static constexpr int kStep = kChannelsInner ? kLanes : kGroups;    // between a thread's channels
  int64_t n, p;
  int c_first;

  __device__ explicit PixelTile(int64_t P) {
    const int64_t tiles = ceil_div(P, kPixels);
    n = blockIdx.x / tiles;
    p = (blockIdx.x % tiles) * kPixels + (kChannelsInner ? threadIdx.y : threadIdx.x);
    c_first = kChannelsInner ? threadIdx.x : threadIdx.y;
  }
  // Sum of each thread's partial over the channels of its pixel.
  template <class A> __device__ A channel_sum(A partial) const { return tile_sum<kChannelsInner>(partial); }
  static dim3 grid(const NCP& v) { return dim3(unsigned(v.N * ceil_div(v.P, kPixels))); }
};

template <bool kChannelsInner> struct ChannelTile {
  static constexpr int kChannels = kChannelsInner ? kLanes : kGroups;  // channels per block
  static constexpr int kStep = kChannelsInner ? kGroups : kLanes;      // between a thread's pixels
  int64_t n, c;
  int p_first;

  __device__ explicit ChannelTile(int64_t C) {
    const int64_t tiles = ceil_div(C, kChannels);
    n = blockIdx.x / tiles;
    c = (blockIdx.x % tiles) * kChannels + (kChannelsInner ? threadIdx.x : threadIdx.y);
    p_first = kChannelsInner ? threadIdx.y : threadIdx.x;
  }
  // Sum of each thread's partial over the pixels of its channel.
  template <class A> __device__ A pixel_sum(A partial) const { return tile_sum<!kChannelsInner>(partial); }
  static dim3 grid(const NCP& v) { return dim3(unsigned(v.N * ceil_div(v.C, kChannels))); }
};

}  // namespace camfast::cuda
