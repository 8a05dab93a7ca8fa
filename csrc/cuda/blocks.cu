// The generator blocks on CUDA: phase-weight folds, batch statistics and the fused epilogues
// (see blocks.h; the convolutions run through ATen / cuDNN in channels_last).
//
// The epilogue kernels work on tiles of 32 output columns u x 32 channels of one output row
// (n, r), with a (32, 8) thread block: threadIdx.x walks channels when reading the NHWC conv
// output (coalesced), and a caller tensor in NCHW goes through a shared-memory transpose so that
// its reads / writes are coalesced along u. The reductions (statistics, backward sums) loop
// over tiles, accumulate in double and write one partial sum per channel and block; a second
// kernel adds the blocks' partials in block order (no atomics: the sums, hence the statistics and
// gradients, are bitwise reproducible for a given GPU, whose SM count sets the reduction grid).
//
// Launches go through cuda::launch (cuda/launch.h): with ATTNGAN_CUDA_EMU this file compiles as
// host C++ against the CPU emulation of emu/cuda_emu.h (csrc/emu/blocks_emu.cpp, the tests).
#include "blocks.h"
#include "cuda/launch.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>

namespace attngan_fast {
namespace blocks {
namespace {

using cuda::current_stream;
using cuda::DeviceGuard;
using cuda::launch;
using cuda::Stream;

constexpr int kTile = 32;  // columns and channels per tile
constexpr int kRows = 8;   // threadIdx.y extent
constexpr int kThreads = 256;

// The geometry as plain values for the kernels.
struct Geo {
  int64_t N, H, W, Co, Hy, Wy, Ho, Wo;
  PhaseLayout L;
  int64_t u_tiles;    // column tiles per output row
  int64_t num_tiles;  // N * Ho * u_tiles
};

Geo make_geo(const PhaseGeom& g) {
  const int64_t u_tiles = (g.Wout() + kTile - 1) / kTile;
  return {g.N, g.H, g.W, g.Co, g.Hy(), g.Wy(), g.Hout(), g.Wout(), g.layout(), u_tiles, g.N * g.Hout() * u_tiles};
}

// Tile t -> (n, r, u0).
struct TilePos {
  int64_t n, r, u0;
};

__device__ inline TilePos tile_pos(const Geo& g, int64_t t) {
  const int64_t row = t / g.u_tiles;
  return {row / g.Ho, row % g.Ho, (t % g.u_tiles) * kTile};
}

__device__ inline int64_t y_off(const Geo& g, int64_t n, int64_t r, int64_t u) {
  return g.L.offset(n, r, u);
}

// Element (n, c, r, u) of a caller tensor with C channels, NHWC- or NCHW-dense.
__device__ inline int64_t caller_off(const Geo& g, bool nhwc, int64_t C, int64_t n, int64_t c, int64_t r, int64_t u) {
  return nhwc ? ((n * g.Ho + r) * g.Wo + u) * C + c : ((n * C + c) * g.Ho + r) * g.Wo + u;
}

// tile[i][j] = src(n, c0 + j, r, u0 + i) for an NCHW caller tensor (reads coalesced along u).
template <typename T, typename acc_t>
__device__ inline void load_nchw_tile(acc_t (*tile)[kTile + 1], const T* src, const Geo& g, int64_t C, const TilePos& p,
                                      int64_t c0) {
  const int64_t u = p.u0 + threadIdx.x;
  for (int j = threadIdx.y; j < kTile; j += kRows) {
    const int64_t c = c0 + j;
    if (u < g.Wo && c < C) tile[threadIdx.x][j] = static_cast<acc_t>(src[caller_off(g, false, C, p.n, c, p.r, u)]);
  }
}

template <typename acc_t>
__device__ inline acc_t sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + ::exp(-x));
}

int reduction_blocks(int64_t num_tiles, int64_t channel_tiles) {
  const int64_t sms = cuda::multiprocessor_count();
  const int64_t want = std::max<int64_t>(1, 8 * sms / std::max<int64_t>(1, channel_tiles));
  return static_cast<int>(std::min<int64_t>(num_tiles, want));
}

// ---- phase weights ---------------------------------------------------------------------------

template <typename T>
__global__ void fold_kernel(const T* __restrict__ w, T* __restrict__ k, int64_t Co, int64_t Ci) {
  using acc_t = at::opmath_type<T>;
  const int64_t total = 16 * Co * Ci;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // e = (po * Ci + c) * 4 + r * 2 + s   (contiguous (4 Co, Ci, 2, 2))
    const int64_t rs = e % 4, c = (e / 4) % Ci, po = e / (4 * Ci);
    const int r = static_cast<int>(rs / 2), s = static_cast<int>(rs % 2);
    const int a = static_cast<int>(po / Co) / 2, b = static_cast<int>(po / Co) % 2;
    const T* wc = w + ((po % Co) * Ci + c) * 9;
    acc_t sum = 0;
    for (int i = fold_first(a, r); i <= fold_last(a, r); ++i)
      for (int j = fold_first(b, s); j <= fold_last(b, s); ++j) sum += static_cast<acc_t>(wc[i * 3 + j]);
    k[e] = static_cast<T>(sum);
  }
}

// dk: (4 Co, Ci, 2, 2) with strides (so, sc, sr, ss).
template <typename T>
__global__ void unfold_kernel(const T* __restrict__ dk, int64_t so, int64_t sc, int64_t sr, int64_t ss,
                              T* __restrict__ dw, int64_t Co, int64_t Ci) {
  using acc_t = at::opmath_type<T>;
  const int64_t total = 9 * Co * Ci;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(e % 9) / 3, j = static_cast<int>(e % 3);
    const int64_t c = (e / 9) % Ci, o = e / (9 * Ci);
    acc_t sum = 0;
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b)
        sum += static_cast<acc_t>(
            dk[((a * 2 + b) * Co + o) * so + c * sc + unfold_tap(a, i) * sr + unfold_tap(b, j) * ss]);
    dw[e] = static_cast<T>(sum);
  }
}

int elementwise_blocks(int64_t total) {
  return static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, 65535));
}

// ---- phase im2col (the GEMM path for small maps) --------------------------------------------

// cols[(n * H + p) * W + t][c * 4 + r * 2 + s] = x[n, c, p + a - 1 + r, t + b - 1 + s] (0 outside).
template <typename T>
__global__ void im2col_kernel(const T* __restrict__ x, T* __restrict__ cols, int64_t N, int64_t H, int64_t W,
                              int64_t Ci, int phase) {
  const int64_t total = N * H * W * 4 * Ci, a = phase / 2, b = phase % 2;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t rs = e % 4, c = (e / 4) % Ci, m = e / (4 * Ci);
    const int64_t n = m / (H * W), p = (m / W) % H, t = m % W;
    const int64_t q = p + a - 1 + rs / 2, v = t + b - 1 + rs % 2;
    cols[e] = (q < 0 || q >= H || v < 0 || v >= W) ? T(0) : x[((n * H + q) * W + v) * Ci + c];
  }
}

// The adjoint, accumulated: gx[n, c, q, v] += cols[(n, q - (a - 1 + r), v - (b - 1 + s))][(c, r, s)].
template <typename T>
__global__ void col2im_add_kernel(const T* __restrict__ cols, T* __restrict__ gx, int64_t N, int64_t H, int64_t W,
                                  int64_t Ci, int phase) {
  using acc_t = at::opmath_type<T>;
  const int64_t total = N * H * W * Ci, a = phase / 2, b = phase % 2;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = e % Ci, m = e / Ci;
    const int64_t n = m / (H * W), q = (m / W) % H, v = m % W;
    acc_t sum = static_cast<acc_t>(gx[e]);
    for (int rs = 0; rs < 4; ++rs) {
      const int64_t p = q - (a - 1 + rs / 2), t = v - (b - 1 + rs % 2);
      if (p < 0 || p >= H || t < 0 || t >= W) continue;
      sum += static_cast<acc_t>(cols[(((n * H + p) * W + t) * Ci + c) * 4 + rs]);
    }
    gx[e] = static_cast<T>(sum);
  }
}

// ---- batch statistics ------------------------------------------------------------------------

// partials: (gridDim.x, 2, Co), block x's sums of y and y^2 per channel.
template <typename T>
__global__ void stats_kernel(const T* __restrict__ y, Geo g, double* __restrict__ partials) {
  __shared__ double part[2][kRows][kTile];
  const int64_t c = blockIdx.y * static_cast<int64_t>(kTile) + threadIdx.x;
  double s = 0, q = 0;
  for (int64_t t = blockIdx.x; t < g.num_tiles; t += gridDim.x) {
    const TilePos p = tile_pos(g, t);
    for (int i = threadIdx.y; i < kTile; i += kRows) {
      const int64_t u = p.u0 + i;
      if (u < g.Wo && c < g.Co) {
        const double v = static_cast<double>(y[y_off(g, p.n, p.r, u) + c]);
        s += v;
        q += v * v;
      }
    }
  }
  part[0][threadIdx.y][threadIdx.x] = s;
  part[1][threadIdx.y][threadIdx.x] = q;
  __syncthreads();
  if (threadIdx.y == 0 && c < g.Co) {
    for (int k = 1; k < kRows; ++k) s += part[0][k][threadIdx.x], q += part[1][k][threadIdx.x];
    double* out = partials + blockIdx.x * 2 * g.Co;
    out[c] = s;
    out[g.Co + c] = q;
  }
}

// Element c of the (blocks, 2, n) partials summed over the blocks, in block order.
__device__ inline double sum_partials(const double* __restrict__ partials, int64_t blocks, int64_t n, int64_t c) {
  double sum = 0;
  for (int64_t b = 0; b < blocks; ++b) sum += partials[b * 2 * n + c];
  return sum;
}

template <typename acc_t>
__global__ void stats_finalize_kernel(const double* __restrict__ partials, int64_t blocks, int64_t Co, double inv_m,
                                      acc_t* __restrict__ mean, acc_t* __restrict__ var) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= Co) return;
  const double m = sum_partials(partials, blocks, Co, c) * inv_m;
  mean[c] = static_cast<acc_t>(m);
  var[c] = static_cast<acc_t>(fmax(sum_partials(partials, blocks, Co, Co + c) * inv_m - m * m, 0.0));
}

// ---- forward epilogue ------------------------------------------------------------------------

template <typename T, Epilogue mode>
__global__ void forward_kernel(const T* __restrict__ y, Geo g, const at::opmath_type<T>* __restrict__ scale,
                               const at::opmath_type<T>* __restrict__ shift, const T* __restrict__ res, bool res_nhwc,
                               T* __restrict__ out, bool out_nhwc, int64_t Cout) {
  using acc_t = at::opmath_type<T>;
  __shared__ acc_t tile[kTile][kTile + 1];
  const TilePos p = tile_pos(g, blockIdx.x);
  const int64_t c0 = blockIdx.y * static_cast<int64_t>(kTile), c = c0 + threadIdx.x;
  if (mode == Epilogue::kResidual && !res_nhwc) {
    load_nchw_tile(tile, res, g, Cout, p, c0);
    __syncthreads();
  }
  acc_t v[kTile / kRows] = {};
  for (int k = 0; k < kTile / kRows; ++k) {
    const int i = threadIdx.y + k * kRows;
    const int64_t u = p.u0 + i;
    if (u >= g.Wo || c >= Cout) continue;
    const T* yp = y + y_off(g, p.n, p.r, u);
    acc_t val;
    if (mode == Epilogue::kCopy) {
      val = static_cast<acc_t>(yp[c]);
    } else if (mode == Epilogue::kGlu) {
      const acc_t za = static_cast<acc_t>(yp[c]) * scale[c] + shift[c];
      const acc_t zb = static_cast<acc_t>(yp[c + Cout]) * scale[c + Cout] + shift[c + Cout];
      val = za * sigmoid(zb);
    } else {
      const acc_t rv =
          res_nhwc ? static_cast<acc_t>(res[caller_off(g, true, Cout, p.n, c, p.r, u)]) : tile[i][threadIdx.x];
      val = rv + static_cast<acc_t>(yp[c]) * scale[c] + shift[c];
    }
    if (out_nhwc) {
      out[caller_off(g, true, Cout, p.n, c, p.r, u)] = static_cast<T>(val);
    } else {
      v[k] = val;
    }
  }
  if (out_nhwc) return;
  __syncthreads();  // the residual tile has been read
  for (int k = 0; k < kTile / kRows; ++k) tile[threadIdx.y + k * kRows][threadIdx.x] = v[k];
  __syncthreads();
  const int64_t u = p.u0 + threadIdx.x;
  for (int j = threadIdx.y; j < kTile; j += kRows) {
    const int64_t cc = c0 + j;
    if (u < g.Wo && cc < Cout) out[caller_off(g, false, Cout, p.n, cc, p.r, u)] = static_cast<T>(tile[threadIdx.x][j]);
  }
}

// ---- backward --------------------------------------------------------------------------------
// dz: the gradient of z = y * scale + shift given the gradient of the epilogue's output.

template <typename T, Epilogue mode>
__global__ void reduce_kernel(const T* __restrict__ grad, bool grad_nhwc, const T* __restrict__ y, Geo g,
                              const at::opmath_type<T>* __restrict__ scale,
                              const at::opmath_type<T>* __restrict__ shift,
                              const at::opmath_type<T>* __restrict__ center, int64_t Cg,
                              double* __restrict__ partials) {
  using acc_t = at::opmath_type<T>;
  __shared__ acc_t tile[kTile][kTile + 1];
  __shared__ double part[4][kRows][kTile];
  const int64_t c0 = blockIdx.y * static_cast<int64_t>(kTile), c = c0 + threadIdx.x;
  double a1 = 0, a2 = 0, b1 = 0, b2 = 0;  // sums of dz and dz * (y - center) for c (and c + Cg)
  for (int64_t t = blockIdx.x; t < g.num_tiles; t += gridDim.x) {
    const TilePos p = tile_pos(g, t);
    if (!grad_nhwc) {
      __syncthreads();
      load_nchw_tile(tile, grad, g, Cg, p, c0);
      __syncthreads();
    }
    for (int i = threadIdx.y; i < kTile; i += kRows) {
      const int64_t u = p.u0 + i;
      if (u >= g.Wo || c >= Cg) continue;
      const acc_t gv =
          grad_nhwc ? static_cast<acc_t>(grad[caller_off(g, true, Cg, p.n, c, p.r, u)]) : tile[i][threadIdx.x];
      const T* yp = y + y_off(g, p.n, p.r, u);
      if (mode == Epilogue::kGlu) {
        const acc_t ya = static_cast<acc_t>(yp[c]), yb = static_cast<acc_t>(yp[c + Cg]);
        const acc_t za = ya * scale[c] + shift[c];
        const acc_t sb = sigmoid(yb * scale[c + Cg] + shift[c + Cg]);
        const acc_t dza = gv * sb, dzb = gv * za * sb * (acc_t(1) - sb);
        a1 += dza;
        a2 += static_cast<double>(dza * (ya - center[c]));
        b1 += dzb;
        b2 += static_cast<double>(dzb * (yb - center[c + Cg]));
      } else {
        a1 += gv;
        a2 += static_cast<double>(gv * (static_cast<acc_t>(yp[c]) - center[c]));
      }
    }
  }
  part[0][threadIdx.y][threadIdx.x] = a1;
  part[1][threadIdx.y][threadIdx.x] = a2;
  part[2][threadIdx.y][threadIdx.x] = b1;
  part[3][threadIdx.y][threadIdx.x] = b2;
  __syncthreads();
  if (threadIdx.y == 0 && c < Cg) {
    for (int k = 1; k < kRows; ++k) {
      a1 += part[0][k][threadIdx.x], a2 += part[1][k][threadIdx.x];
      b1 += part[2][k][threadIdx.x], b2 += part[3][k][threadIdx.x];
    }
    double* out = partials + blockIdx.x * 2 * g.Co;  // (gridDim.x, 2, Co) like stats_kernel's
    out[c] = a1;
    out[g.Co + c] = a2;
    if (mode == Epilogue::kGlu) {
      out[c + Cg] = b1;
      out[g.Co + c + Cg] = b2;
    }
  }
}

template <typename acc_t>
__global__ void sums_to_acc_kernel(const double* __restrict__ partials, int64_t blocks, int64_t n,
                                   acc_t* __restrict__ r1, acc_t* __restrict__ r2) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= n) return;
  r1[c] = static_cast<acc_t>(sum_partials(partials, blocks, n, c));
  r2[c] = static_cast<acc_t>(sum_partials(partials, blocks, n, n + c));
}

template <typename T, Epilogue mode>
__global__ void apply_kernel(const T* __restrict__ grad, bool grad_nhwc, const T* __restrict__ y, Geo g,
                             const at::opmath_type<T>* __restrict__ scale, const at::opmath_type<T>* __restrict__ shift,
                             const at::opmath_type<T>* __restrict__ center, const at::opmath_type<T>* __restrict__ A,
                             const at::opmath_type<T>* __restrict__ B, const at::opmath_type<T>* __restrict__ D,
                             int64_t Cg, T* __restrict__ gy) {
  using acc_t = at::opmath_type<T>;
  __shared__ acc_t tile[kTile][kTile + 1];
  const TilePos p = tile_pos(g, blockIdx.x);
  const int64_t c0 = blockIdx.y * static_cast<int64_t>(kTile), c = c0 + threadIdx.x;
  if (!grad_nhwc) {
    load_nchw_tile(tile, grad, g, Cg, p, c0);
    __syncthreads();
  }
  for (int i = threadIdx.y; i < kTile; i += kRows) {
    const int64_t u = p.u0 + i;
    if (u >= g.Wo || c >= Cg) continue;
    const acc_t gv =
        grad_nhwc ? static_cast<acc_t>(grad[caller_off(g, true, Cg, p.n, c, p.r, u)]) : tile[i][threadIdx.x];
    const int64_t off = y_off(g, p.n, p.r, u);
    if (mode == Epilogue::kCopy) {
      gy[off + c] = static_cast<T>(gv);
    } else if (mode == Epilogue::kGlu) {
      const acc_t ya = static_cast<acc_t>(y[off + c]), yb = static_cast<acc_t>(y[off + c + Cg]);
      const acc_t za = ya * scale[c] + shift[c];
      const acc_t sb = sigmoid(yb * scale[c + Cg] + shift[c + Cg]);
      const acc_t dza = gv * sb, dzb = gv * za * sb * (acc_t(1) - sb);
      gy[off + c] = static_cast<T>(A[c] * dza + B[c] * (ya - center[c]) + D[c]);
      gy[off + c + Cg] = static_cast<T>(A[c + Cg] * dzb + B[c + Cg] * (yb - center[c + Cg]) + D[c + Cg]);
    } else {
      gy[off + c] = static_cast<T>(A[c] * gv + B[c] * (static_cast<acc_t>(y[off + c]) - center[c]) + D[c]);
    }
  }
}

// The positions of the 2x2-phase output that no phase uses get a zero gradient: phase row a = 0
// never reads row H, a = 1 never row 0; phase column b = 0 never reads column W, b = 1 never 0.
template <typename T>
__global__ void zero_border_kernel(T* __restrict__ gy, Geo g) {
  const int64_t Cy = 4 * g.Co, row_total = g.N * g.Wy * Cy, total = row_total + g.N * g.Hy * Cy;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = e % Cy, phase = k / g.Co;
    int64_t n, q, t;
    if (e < row_total) {
      t = (e / Cy) % g.Wy, n = e / (Cy * g.Wy);
      q = phase / 2 == 0 ? g.H : 0;
    } else {
      const int64_t f = e - row_total;
      q = (f / Cy) % g.Hy, n = f / (Cy * g.Hy);
      t = phase % 2 == 0 ? g.W : 0;
    }
    gy[((n * g.Hy + q) * g.Wy + t) * Cy + k] = T(0);
  }
}

// ---- the Kernels interface of blocks.h -------------------------------------------------------

template <typename T>
const T* ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

at::Tensor dense_vec(const at::Tensor& t) {
  return t.defined() ? t.contiguous() : t;
}

bool nhwc_layout(const at::Tensor& t) {
  return t.defined() && !t.is_contiguous();
}

#define BLOCKS_LAUNCH_MODE(mode, KERNEL, GRID, ...)                                                 \
  switch (mode) {                                                                                   \
    case Epilogue::kCopy:                                                                           \
      launch(KERNEL<scalar_t, Epilogue::kCopy>, GRID, dim3(kTile, kRows), stream, __VA_ARGS__);     \
      break;                                                                                        \
    case Epilogue::kGlu:                                                                            \
      launch(KERNEL<scalar_t, Epilogue::kGlu>, GRID, dim3(kTile, kRows), stream, __VA_ARGS__);      \
      break;                                                                                        \
    case Epilogue::kResidual:                                                                       \
      launch(KERNEL<scalar_t, Epilogue::kResidual>, GRID, dim3(kTile, kRows), stream, __VA_ARGS__); \
      break;                                                                                        \
  }

struct CudaBlockKernels {
  static at::Tensor fold_phase_weight(const at::Tensor& w) {
    const DeviceGuard guard(w.device());
    at::Tensor k = at::empty({4 * w.size(0), w.size(1), 2, 2}, w.options());
    if (k.numel() == 0) return k;
    const Stream stream = current_stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "fold_phase_weight_cuda", [&] {
      launch(fold_kernel<scalar_t>, elementwise_blocks(k.numel()), kThreads, stream, w.const_data_ptr<scalar_t>(),
             k.mutable_data_ptr<scalar_t>(), w.size(0), w.size(1));
    });
    return k;
  }

  static at::Tensor unfold_phase_grad(const at::Tensor& dk) {
    const DeviceGuard guard(dk.device());
    at::Tensor dw = at::empty({dk.size(0) / 4, dk.size(1), 3, 3}, dk.options());
    if (dw.numel() == 0) return dw;
    const Stream stream = current_stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dk.scalar_type(), "unfold_phase_grad_cuda", [&] {
      launch(unfold_kernel<scalar_t>, elementwise_blocks(dw.numel()), kThreads, stream, dk.const_data_ptr<scalar_t>(),
             dk.stride(0), dk.stride(1), dk.stride(2), dk.stride(3), dw.mutable_data_ptr<scalar_t>(), dw.size(0),
             dw.size(1));
    });
    return dw;
  }

  static void im2col_phase(const at::Tensor& x_cl, const PhaseGeom& g, int phase, const at::Tensor& cols) {
    if (cols.numel() == 0) return;
    const DeviceGuard guard(x_cl.device());
    const Stream stream = current_stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_cl.scalar_type(), "im2col_phase_cuda", [&] {
      launch(im2col_kernel<scalar_t>, elementwise_blocks(cols.numel()), kThreads, stream,
             x_cl.const_data_ptr<scalar_t>(), cols.mutable_data_ptr<scalar_t>(), g.N, g.H, g.W, x_cl.size(1), phase);
    });
  }

  static void col2im_phase_add(const at::Tensor& cols, const PhaseGeom& g, int phase, const at::Tensor& gx) {
    if (gx.numel() == 0) return;
    const DeviceGuard guard(gx.device());
    const Stream stream = current_stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cols.scalar_type(), "col2im_phase_add_cuda", [&] {
      launch(col2im_add_kernel<scalar_t>, elementwise_blocks(gx.numel()), kThreads, stream,
             cols.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(), g.N, g.H, g.W, gx.size(1), phase);
    });
  }

  static void channel_stats(const at::Tensor& y, const PhaseGeom& pg, const at::Tensor& mean, const at::Tensor& var) {
    const DeviceGuard guard(y.device());
    const Geo g = make_geo(pg);
    const Stream stream = current_stream();
    const int64_t channel_tiles = (g.Co + kTile - 1) / kTile;
    const int blocks = g.num_tiles > 0 ? reduction_blocks(g.num_tiles, channel_tiles) : 0;
    const at::Tensor partials = at::empty({blocks, 2, g.Co}, y.options().dtype(at::kDouble));
    if (blocks > 0) {
      const dim3 grid(blocks, channel_tiles);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "channel_stats_cuda", [&] {
        launch(stats_kernel<scalar_t>, grid, dim3(kTile, kRows), stream, y.const_data_ptr<scalar_t>(), g,
               partials.mutable_data_ptr<double>());
      });
    }
    AT_DISPATCH_FLOATING_TYPES(mean.scalar_type(), "channel_stats_finalize_cuda", [&] {
      launch(stats_finalize_kernel<scalar_t>, (g.Co + kThreads - 1) / kThreads, kThreads, stream,
             partials.const_data_ptr<double>(), blocks, g.Co, 1.0 / static_cast<double>(pg.count()),
             mean.mutable_data_ptr<scalar_t>(), var.mutable_data_ptr<scalar_t>());
    });
  }

  static void forward_epilogue(Epilogue mode, const at::Tensor& y, const PhaseGeom& pg, const at::Tensor& scale,
                               const at::Tensor& shift, const at::Tensor& residual, const at::Tensor& out) {
    const DeviceGuard guard(y.device());
    const Geo g = make_geo(pg);
    const int64_t cout = mode == Epilogue::kGlu ? g.Co / 2 : g.Co;
    if (g.num_tiles == 0 || cout == 0) return;
    const at::Tensor sc = dense_vec(scale), sh = dense_vec(shift);
    const Stream stream = current_stream();
    const dim3 grid(static_cast<unsigned>(g.num_tiles), static_cast<unsigned>((cout + kTile - 1) / kTile));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "forward_epilogue_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      BLOCKS_LAUNCH_MODE(mode, forward_kernel, grid, y.const_data_ptr<scalar_t>(), g, ptr<acc_t>(sc), ptr<acc_t>(sh),
                         ptr<scalar_t>(residual), nhwc_layout(residual), out.mutable_data_ptr<scalar_t>(),
                         nhwc_layout(out), cout)
    });
  }

  static void backward_reduce(Epilogue mode, const at::Tensor& grad_out, const at::Tensor& y, const PhaseGeom& pg,
                              const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& center,
                              const at::Tensor& r1, const at::Tensor& r2) {
    TORCH_INTERNAL_ASSERT(mode != Epilogue::kCopy);
    const DeviceGuard guard(y.device());
    const Geo g = make_geo(pg);
    const int64_t cg = mode == Epilogue::kGlu ? g.Co / 2 : g.Co;
    const at::Tensor grad = grad_out.to(y.scalar_type());
    const at::Tensor sc = dense_vec(scale), sh = dense_vec(shift), ct = dense_vec(center);
    const Stream stream = current_stream();
    const int64_t channel_tiles = (cg + kTile - 1) / kTile;
    const int blocks = g.num_tiles > 0 && cg > 0 ? reduction_blocks(g.num_tiles, channel_tiles) : 0;
    const at::Tensor partials = at::empty({blocks, 2, g.Co}, y.options().dtype(at::kDouble));
    if (blocks > 0) {
      const dim3 grid(blocks, channel_tiles), block(kTile, kRows);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "backward_reduce_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        auto* kernel = mode == Epilogue::kGlu ? reduce_kernel<scalar_t, Epilogue::kGlu>
                                              : reduce_kernel<scalar_t, Epilogue::kResidual>;
        launch(kernel, grid, block, stream, grad.const_data_ptr<scalar_t>(), nhwc_layout(grad),
               y.const_data_ptr<scalar_t>(), g, ptr<acc_t>(sc), ptr<acc_t>(sh), ptr<acc_t>(ct), cg,
               partials.mutable_data_ptr<double>());
      });
    }
    AT_DISPATCH_FLOATING_TYPES(r1.scalar_type(), "backward_reduce_finalize_cuda", [&] {
      launch(sums_to_acc_kernel<scalar_t>, (g.Co + kThreads - 1) / kThreads, kThreads, stream,
             partials.const_data_ptr<double>(), blocks, g.Co, r1.mutable_data_ptr<scalar_t>(),
             r2.mutable_data_ptr<scalar_t>());
    });
  }

  static void backward_apply(Epilogue mode, const at::Tensor& grad_out, const at::Tensor& y, const PhaseGeom& pg,
                             const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& center,
                             const at::Tensor& A, const at::Tensor& B, const at::Tensor& D, const at::Tensor& grad_y) {
    const DeviceGuard guard(grad_y.device());
    const Geo g = make_geo(pg);
    const int64_t cg = mode == Epilogue::kGlu ? g.Co / 2 : g.Co;
    const at::Tensor grad = grad_out.to(grad_y.scalar_type());
    const at::Tensor sc = dense_vec(scale), sh = dense_vec(shift), ct = dense_vec(center);
    const at::Tensor a = dense_vec(A), b = dense_vec(B), d = dense_vec(D);
    const Stream stream = current_stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_y.scalar_type(), "backward_apply_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      if (g.num_tiles > 0 && cg > 0) {
        const dim3 grid(static_cast<unsigned>(g.num_tiles), static_cast<unsigned>((cg + kTile - 1) / kTile));
        BLOCKS_LAUNCH_MODE(mode, apply_kernel, grid, grad.const_data_ptr<scalar_t>(), nhwc_layout(grad),
                           ptr<scalar_t>(y), g, ptr<acc_t>(sc), ptr<acc_t>(sh), ptr<acc_t>(ct), ptr<acc_t>(a),
                           ptr<acc_t>(b), ptr<acc_t>(d), cg, grad_y.mutable_data_ptr<scalar_t>())
      }
      if (g.L.pad && grad_y.numel() > 0) {
        const int64_t border = g.N * (g.Wy + g.Hy) * 4 * g.Co;
        launch(zero_border_kernel<scalar_t>, elementwise_blocks(border), kThreads, stream,
               grad_y.mutable_data_ptr<scalar_t>(), g);
      }
    });
  }
};

#undef BLOCKS_LAUNCH_MODE

}  // namespace

// attngan_fast::* on CUDA; the emulated build: attngan_fast_emu::* on CPU tensors (cuda/launch.h).
TORCH_LIBRARY_IMPL(ATTNGAN_CUDA_LIBRARY, ATTNGAN_CUDA_KEY, m) {
  m.impl("upsample_conv3x3", &upsample_conv3x3<CudaBlockKernels>);
  m.impl("upsample_conv3x3_backward", &upsample_conv3x3_backward<CudaBlockKernels>);
  m.impl("up_block", &up_block<CudaBlockKernels>);
  m.impl("up_block_backward", &up_block_backward<CudaBlockKernels>);
  m.impl("res_block", &res_block<CudaBlockKernels>);
  m.impl("res_block_backward", &res_block_backward<CudaBlockKernels>);
}

}  // namespace blocks
}  // namespace attngan_fast
