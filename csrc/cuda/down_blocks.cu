// The discriminator blocks on CUDA: batch statistics and the fused BatchNorm + LeakyReLU
// epilogues (see down_blocks.h; the convolutions run through ATen / cuDNN in x's memory format).
//
// The tensors are seen as (outer, C, inner) (NCHW: inner = H*W; NHWC: inner = 1). Elementwise
// kernels walk every element with a grid-stride loop (channel (e / inner) % C). Reductions run a
// grid of (chunks, C) blocks of kThreads: each block sums one channel over a strided share of its
// M = outer * inner values in double, reduces in shared memory (a __syncthreads tree) and writes
// one partial sum per (chunk, channel); a finalize kernel adds a channel's partials in chunk order
// (no atomics: the statistics and gradients are bitwise reproducible) and writes the results.
// Each kernel has one small launcher (launch_*).
//
// Launches go through cuda::launch (cuda/launch.h): with ATTNGAN_CUDA_EMU this file compiles as
// host C++ against the CPU emulation of emu/cuda_emu.h (csrc/emu/blocks_emu.cpp, the tests).
#include "cuda/launch.h"
#include "down_blocks.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>

namespace attngan_fast {
namespace down_blocks {
namespace {

using cuda::current_stream;
using cuda::DeviceGuard;
using cuda::launch;
using cuda::Stream;

constexpr int kThreads = 256;

template <typename acc_t>
__device__ inline acc_t leaky(acc_t z, acc_t slope) {
  return z > acc_t(0) ? z : z * slope;
}

template <typename acc_t>
__device__ inline acc_t leaky_grad(acc_t z, acc_t slope) {
  return z > acc_t(0) ? acc_t(1) : slope;
}

// Element k of channel c: k = o * inner + i.
__device__ inline int64_t channel_offset(int64_t k, int64_t c, int64_t C, int64_t inner) {
  return ((k / inner) * C + c) * inner + k % inner;
}

// Sums `a` and `b` over the block (blockDim.x == kThreads); thread 0 writes them to *out_a, *out_b.
__device__ inline void block_sum(double a, double b, double* out_a, double* out_b) {
  __shared__ double sa[kThreads], sb[kThreads];
  sa[threadIdx.x] = a;
  sb[threadIdx.x] = b;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      sa[threadIdx.x] += sa[threadIdx.x + half];
      sb[threadIdx.x] += sb[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *out_a = sa[0];
    *out_b = sb[0];
  }
}

// partials: (2, C, chunks); block (x, c) writes [0][c][x] and [1][c][x].
__device__ inline void block_partials(double a, double b, double* partials, int64_t C) {
  const int64_t chunks = gridDim.x, c = blockIdx.y;
  block_sum(a, b, partials + c * chunks + blockIdx.x, partials + (C + c) * chunks + blockIdx.x);
}

// The chunks' partials of sum k (0 or 1) for channel c, added in chunk order.
__device__ inline double sum_partials(const double* __restrict__ partials, int64_t chunks, int64_t C, int k,
                                      int64_t c) {
  double s = 0;
  for (int64_t x = 0; x < chunks; ++x) s += partials[(k * C + c) * chunks + x];
  return s;
}

// (chunks, C) blocks for a per-channel reduction over M values.
dim3 reduction_grid(int64_t M, int64_t C) {
  const int64_t chunks = std::min<int64_t>(std::max<int64_t>(1, (M + kThreads * 16 - 1) / (kThreads * 16)), 1024);
  return dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(C));
}

int elementwise_blocks(int64_t total) {
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(1, (total + kThreads - 1) / kThreads), 65535));
}

// ---- batch statistics: sums of (y - k) and (y - k)^2 about the pivot k = the channel's first value

template <typename T>
__global__ void stats_kernel(const T* __restrict__ y, int64_t C, int64_t inner, int64_t M,
                             double* __restrict__ partials) {
  const int64_t c = blockIdx.y;
  const double k = static_cast<double>(y[c * inner]);
  double s = 0, q = 0;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; e < M;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const double d = static_cast<double>(y[channel_offset(e, c, C, inner)]) - k;
    s += d;
    q += d * d;
  }
  block_partials(s, q, partials, C);
}

template <typename T>
__global__ void stats_finalize_kernel(const T* __restrict__ y, const double* __restrict__ partials, int64_t chunks,
                                      int64_t C, int64_t inner, double inv_m, at::opmath_type<T>* __restrict__ mean,
                                      at::opmath_type<T>* __restrict__ var) {
  using acc_t = at::opmath_type<T>;
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const double d = sum_partials(partials, chunks, C, 0, c) * inv_m;
  mean[c] = static_cast<acc_t>(static_cast<double>(y[c * inner]) + d);
  var[c] = static_cast<acc_t>(fmax(sum_partials(partials, chunks, C, 1, c) * inv_m - d * d, 0.0));
}

template <typename T>
void launch_stats(const at::Tensor& y, const ChannelView& v, dim3 grid, const at::Tensor& partials, Stream stream) {
  launch(stats_kernel<T>, grid, dim3(kThreads), stream, y.const_data_ptr<T>(), v.C, v.inner, v.count(),
         partials.mutable_data_ptr<double>());
}

template <typename T>
void launch_stats_finalize(const at::Tensor& y, const ChannelView& v, const at::Tensor& partials,
                           const at::Tensor& mean, const at::Tensor& var, Stream stream) {
  using acc_t = at::opmath_type<T>;
  launch(stats_finalize_kernel<T>, dim3(elementwise_blocks(v.C)), dim3(kThreads), stream, y.const_data_ptr<T>(),
         partials.const_data_ptr<double>(), partials.size(2), v.C, v.inner, 1.0 / static_cast<double>(v.count()),
         mean.mutable_data_ptr<acc_t>(), var.mutable_data_ptr<acc_t>());
}

// ---- forward epilogue: out = lrelu(y * scale + shift); out may be y (same-index aliasing only) --

template <typename T>
__global__ void forward_kernel(const T* y, const at::opmath_type<T>* __restrict__ scale,
                               const at::opmath_type<T>* __restrict__ shift, at::opmath_type<T> slope, int64_t C,
                               int64_t inner, int64_t total, T* out) {
  using acc_t = at::opmath_type<T>;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = (e / inner) % C;
    out[e] = static_cast<T>(leaky(static_cast<acc_t>(y[e]) * scale[c] + shift[c], slope));
  }
}

template <typename T>
void launch_forward(const at::Tensor& y, const ChannelView& v, const at::Tensor& scale, const at::Tensor& shift,
                    double slope, const at::Tensor& out, Stream stream) {
  using acc_t = at::opmath_type<T>;
  const int64_t total = y.numel();
  launch(forward_kernel<T>, dim3(elementwise_blocks(total)), dim3(kThreads), stream, y.const_data_ptr<T>(),
         scale.const_data_ptr<acc_t>(), shift.const_data_ptr<acc_t>(), static_cast<acc_t>(slope), v.C, v.inner, total,
         out.mutable_data_ptr<T>());
}

// ---- backward: dz = g * lrelu'(y * scale + shift) -----------------------------------------------

template <typename T>
__global__ void reduce_kernel(const T* __restrict__ g, const T* __restrict__ y,
                              const at::opmath_type<T>* __restrict__ scale,
                              const at::opmath_type<T>* __restrict__ shift,
                              const at::opmath_type<T>* __restrict__ center, at::opmath_type<T> slope, int64_t C,
                              int64_t inner, int64_t M, double* __restrict__ partials) {
  using acc_t = at::opmath_type<T>;
  const int64_t c = blockIdx.y;
  const acc_t a = scale[c], b = shift[c], m = center[c];
  double s1 = 0, s2 = 0;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; e < M;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t off = channel_offset(e, c, C, inner);
    const acc_t yv = static_cast<acc_t>(y[off]);
    const acc_t dz = static_cast<acc_t>(g[off]) * leaky_grad(yv * a + b, slope);
    s1 += static_cast<double>(dz);
    s2 += static_cast<double>(dz * (yv - m));
  }
  block_partials(s1, s2, partials, C);
}

template <typename acc_t>
__global__ void sums_to_acc_kernel(const double* __restrict__ partials, int64_t chunks, int64_t C,
                                   acc_t* __restrict__ r1, acc_t* __restrict__ r2) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  r1[c] = static_cast<acc_t>(sum_partials(partials, chunks, C, 0, c));
  r2[c] = static_cast<acc_t>(sum_partials(partials, chunks, C, 1, c));
}

template <typename T>
void launch_reduce(const at::Tensor& g, const at::Tensor& y, const ChannelView& v, const at::Tensor& scale,
                   const at::Tensor& shift, const at::Tensor& center, double slope, dim3 grid,
                   const at::Tensor& partials, Stream stream) {
  using acc_t = at::opmath_type<T>;
  launch(reduce_kernel<T>, grid, dim3(kThreads), stream, g.const_data_ptr<T>(), y.const_data_ptr<T>(),
         scale.const_data_ptr<acc_t>(), shift.const_data_ptr<acc_t>(), center.const_data_ptr<acc_t>(),
         static_cast<acc_t>(slope), v.C, v.inner, v.count(), partials.mutable_data_ptr<double>());
}

template <typename acc_t>
void launch_sums_to_acc(const at::Tensor& partials, int64_t C, const at::Tensor& r1, const at::Tensor& r2,
                        Stream stream) {
  launch(sums_to_acc_kernel<acc_t>, dim3(elementwise_blocks(C)), dim3(kThreads), stream,
         partials.const_data_ptr<double>(), partials.size(2), C, r1.mutable_data_ptr<acc_t>(),
         r2.mutable_data_ptr<acc_t>());
}

// grad_y = A * dz + B * (y - center) + D.
template <typename T>
__global__ void apply_kernel(const T* __restrict__ g, const T* __restrict__ y,
                             const at::opmath_type<T>* __restrict__ scale, const at::opmath_type<T>* __restrict__ shift,
                             const at::opmath_type<T>* __restrict__ center, const at::opmath_type<T>* __restrict__ A,
                             const at::opmath_type<T>* __restrict__ B, const at::opmath_type<T>* __restrict__ D,
                             at::opmath_type<T> slope, int64_t C, int64_t inner, int64_t total, T* __restrict__ gy) {
  using acc_t = at::opmath_type<T>;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = (e / inner) % C;
    const acc_t yv = static_cast<acc_t>(y[e]);
    const acc_t dz = static_cast<acc_t>(g[e]) * leaky_grad(yv * scale[c] + shift[c], slope);
    gy[e] = static_cast<T>(A[c] * dz + B[c] * (yv - center[c]) + D[c]);
  }
}

template <typename T>
void launch_apply(const at::Tensor& g, const at::Tensor& y, const ChannelView& v, const at::Tensor& scale,
                  const at::Tensor& shift, const at::Tensor& center, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& D, double slope, const at::Tensor& grad_y, Stream stream) {
  using acc_t = at::opmath_type<T>;
  const int64_t total = y.numel();
  launch(apply_kernel<T>, dim3(elementwise_blocks(total)), dim3(kThreads), stream, g.const_data_ptr<T>(),
         y.const_data_ptr<T>(), scale.const_data_ptr<acc_t>(), shift.const_data_ptr<acc_t>(),
         center.const_data_ptr<acc_t>(), A.const_data_ptr<acc_t>(), B.const_data_ptr<acc_t>(),
         D.const_data_ptr<acc_t>(), static_cast<acc_t>(slope), v.C, v.inner, total, grad_y.mutable_data_ptr<T>());
}

// ---- the Kernels interface of down_blocks.h --------------------------------------------------

struct CudaDownKernels {
  static at::Tensor conv(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding) {
    return aten_conv(x, weight, stride, padding);
  }

  static std::tuple<at::Tensor, at::Tensor> conv_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                                          const at::Tensor& weight, int64_t stride, int64_t padding,
                                                          bool need_x, bool need_w) {
    return aten_conv_backward(grad_y, x, weight, stride, padding, need_x, need_w);
  }

  static void channel_stats(const at::Tensor& y, const ChannelView& v, const at::Tensor& mean, const at::Tensor& var) {
    const DeviceGuard guard(y.device());
    const Stream stream = current_stream();
    const dim3 grid = reduction_grid(v.count(), v.C);  // count() > 1 (checked by down_block)
    const at::Tensor partials = at::empty({2, v.C, grid.x}, y.options().dtype(at::kDouble));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_stats_cuda", [&] {
      launch_stats<scalar_t>(y, v, grid, partials, stream);
      launch_stats_finalize<scalar_t>(y, v, partials, mean, var, stream);
    });
  }

  static void forward_apply(const at::Tensor& y, const ChannelView& v, const at::Tensor& scale, const at::Tensor& shift,
                            double slope, const at::Tensor& out) {
    if (y.numel() == 0) return;
    const DeviceGuard guard(y.device());
    const Stream stream = current_stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_forward_cuda", [&] {
      launch_forward<scalar_t>(y, v, scale.contiguous(), shift.contiguous(), slope, out, stream);
    });
  }

  static void backward_reduce(const at::Tensor& g, const at::Tensor& y, const ChannelView& v, const at::Tensor& scale,
                              const at::Tensor& shift, const at::Tensor& center, double slope, const at::Tensor& r1,
                              const at::Tensor& r2) {
    const DeviceGuard guard(y.device());
    const Stream stream = current_stream();
    const dim3 grid = reduction_grid(v.count(), v.C);
    // no chunk without values: zeros, so that the sums of an empty batch are 0
    const at::Tensor partials = v.count() > 0 ? at::empty({2, v.C, grid.x}, y.options().dtype(at::kDouble))
                                              : at::zeros({2, v.C, 1}, y.options().dtype(at::kDouble));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_reduce_cuda", [&] {
      if (v.count() > 0) {
        launch_reduce<scalar_t>(g, y, v, scale.contiguous(), shift.contiguous(), center.contiguous(), slope, grid,
                                partials, stream);
      }
      launch_sums_to_acc<at::opmath_type<scalar_t>>(partials, v.C, r1, r2, stream);
    });
  }

  static void backward_apply(const at::Tensor& g, const at::Tensor& y, const ChannelView& v, const at::Tensor& scale,
                             const at::Tensor& shift, const at::Tensor& center, const at::Tensor& A,
                             const at::Tensor& B, const at::Tensor& D, double slope, const at::Tensor& grad_y) {
    if (y.numel() == 0) return;
    const DeviceGuard guard(y.device());
    const Stream stream = current_stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_apply_cuda", [&] {
      launch_apply<scalar_t>(g, y, v, scale.contiguous(), shift.contiguous(), center.contiguous(), A.contiguous(),
                             B.contiguous(), D.contiguous(), slope, grad_y, stream);
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ATTNGAN_CUDA_LIBRARY, ATTNGAN_CUDA_KEY, m) {
  m.impl("down_block", &down_block<CudaDownKernels>);
  m.impl("down_block_backward", &down_block_backward<CudaDownKernels>);
}

}  // namespace down_blocks
}  // namespace attngan_fast
