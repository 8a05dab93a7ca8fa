// The generator blocks on the CPU: batch statistics and the fused epilogues (see blocks.h).
//
// Every kernel walks the rows (n, r) of the S*H x S*W output map, one row per task, with the
// channels innermost (contiguous in the NHWC conv output, so the inner loops vectorize). Caller
// tensors in NCHW go through a per-row transpose buffer; channels_last ones are read in place.
#include "blocks.h"
#include "thread_sums.h"
#include "vec_exp.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace attngan_fast {
namespace blocks {
namespace {

template <typename acc_t>
inline acc_t sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + std::exp(-x));
}

template <>
inline float sigmoid<float>(float x) {
  return 1.0f / (1.0f + vexp(-x));
}

// Backward of out = z_a * sigmoid(z_b), z = y * scale + shift, for the output gradient g:
// the gradients of z_a (a) and of z_b (b).
template <typename acc_t>
struct GluGrad {
  acc_t a, b;
};

template <typename acc_t>
inline GluGrad<acc_t> glu_grad(acc_t ya, acc_t yb, acc_t g, acc_t scale_a, acc_t shift_a, acc_t scale_b,
                               acc_t shift_b) {
  const acc_t za = ya * scale_a + shift_a;
  const acc_t sb = sigmoid(yb * scale_b + shift_b);
  return {g * sb, g * za * sb * (acc_t(1) - sb)};
}

// dst[j * dst_ld + i] = src[i * src_ld + j] for i < rows, j < cols; float by 8x8 AVX2 blocks.
template <typename T>
void transpose_2d(const T* __restrict__ src, int64_t rows, int64_t cols, int64_t src_ld, T* __restrict__ dst,
                  int64_t dst_ld) {
  int64_t i0 = 0;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    for (; i0 + 8 <= rows; i0 += 8) {
      int64_t j0 = 0;
      for (; j0 + 8 <= cols; j0 += 8) {
        const float* s = src + i0 * src_ld + j0;
        __m256 r[8], t[8];
        for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(s + k * src_ld);
        for (int k = 0; k < 4; ++k) {
          t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
          t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
        }
        r[0] = _mm256_shuffle_ps(t[0], t[2], _MM_SHUFFLE(1, 0, 1, 0));
        r[1] = _mm256_shuffle_ps(t[0], t[2], _MM_SHUFFLE(3, 2, 3, 2));
        r[2] = _mm256_shuffle_ps(t[1], t[3], _MM_SHUFFLE(1, 0, 1, 0));
        r[3] = _mm256_shuffle_ps(t[1], t[3], _MM_SHUFFLE(3, 2, 3, 2));
        r[4] = _mm256_shuffle_ps(t[4], t[6], _MM_SHUFFLE(1, 0, 1, 0));
        r[5] = _mm256_shuffle_ps(t[4], t[6], _MM_SHUFFLE(3, 2, 3, 2));
        r[6] = _mm256_shuffle_ps(t[5], t[7], _MM_SHUFFLE(1, 0, 1, 0));
        r[7] = _mm256_shuffle_ps(t[5], t[7], _MM_SHUFFLE(3, 2, 3, 2));
        float* d = dst + j0 * dst_ld + i0;
        for (int k = 0; k < 4; ++k) {
          _mm256_storeu_ps(d + k * dst_ld, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
          _mm256_storeu_ps(d + (k + 4) * dst_ld, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
        }
      }
      for (int64_t i = i0; i < i0 + 8; ++i)
        for (int64_t j = j0; j < cols; ++j) dst[j * dst_ld + i] = src[i * src_ld + j];
    }
  }
#endif
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = i0; i < rows; ++i) dst[j * dst_ld + i] = src[i * src_ld + j];
}

// A caller tensor (N, C, Ho, Wo), NCHW- or NHWC-dense, seen one output row at a time as a
// (Wo x C) channels-fastest block: in place for NHWC, through a transposed buffer for NCHW.
template <typename T>
struct CallerRows {
  T* data;
  bool nhwc;
  int64_t C, Ho, Wo;

  CallerRows(const at::Tensor& t, int64_t channels, int64_t ho, int64_t wo)
      : data(t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr),
        // NCHW unless it is not NCHW-dense (when both hold, C == 1 or Ho * Wo == 1, the two agree)
        nhwc(t.defined() && !t.is_contiguous()),
        C(channels),
        Ho(ho),
        Wo(wo) {
    TORCH_INTERNAL_ASSERT(!nhwc || t.is_contiguous(at::MemoryFormat::ChannelsLast));
  }

  size_t buffer_size() const { return nhwc || data == nullptr ? 0 : static_cast<size_t>(Wo * C); }

  const T* read(int64_t n, int64_t r, T* buf) const {
    if (nhwc) return data + (n * Ho + r) * Wo * C;
    transpose_2d(data + n * C * Ho * Wo + r * Wo, C, Wo, Ho * Wo, buf, C);
    return buf;
  }

  T* row(int64_t n, int64_t r, T* buf) const { return nhwc ? data + (n * Ho + r) * Wo * C : buf; }

  void flush(int64_t n, int64_t r, const T* buf) const {
    if (!nhwc) transpose_2d(buf, Wo, C, C, data + n * C * Ho * Wo + r * Wo, Ho * Wo);
  }
};

// Rows of the output map per task, so that one task has some tens of KB of work.
int64_t row_grain(const PhaseGeom& g) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.Wout() * g.Co));
}

template <typename T>
const T* ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// The channels of an epilogue's per-pixel loop: the GLU's output half of the conv's, else all.
int64_t epilogue_channels(Epilogue mode, const PhaseGeom& g) {
  return mode == Epilogue::kGlu ? g.Co / 2 : g.Co;
}

// PhaseLayout::col_offset(u) for u < Wo, computed once per map (no integer division per pixel).
std::vector<int64_t> column_offsets(const PhaseLayout& L, int64_t Wo) {
  std::vector<int64_t> cols(static_cast<size_t>(Wo));
  for (int64_t u = 0; u < Wo; ++u) cols[u] = L.col_offset(u);
  return cols;
}

// f(std::integral_constant<int64_t, C>) where the per-pixel channel count C of a float map is a
// small one the generator's blocks have (the demo's: 8-32), else f(integral_constant<0>): with a
// constant count the channel loops unroll and a task's sums stay in registers (the demo's 128 px
// up-block backward, batch 16, two threads: 29-31 -> 21-23 ms).
template <typename T, typename F>
void with_channel_count(int64_t C, F&& f) {
  if constexpr (std::is_same_v<T, float>) {
    switch (C) {
      case 8:
        return f(std::integral_constant<int64_t, 8>{});
      case 16:
        return f(std::integral_constant<int64_t, 16>{});
      case 32:
        return f(std::integral_constant<int64_t, 32>{});
      default:
        break;
    }
  }
  f(std::integral_constant<int64_t, 0>{});
}

// ---- per-pixel loops over the channels (restrict pointers, so that they vectorize) -----------

template <typename T>
inline void stats_pixel(const T* __restrict__ y, double* __restrict__ s, double* __restrict__ q, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const double v = static_cast<double>(y[c]);
    s[c] += v;
    q[c] += v * v;
  }
}

// out = epilogue(y * scale + shift); C: output channels (GLU reads y[c] and y[c + C]).
template <typename T, Epilogue mode>
inline void forward_pixel(const T* __restrict__ y, const T* __restrict__ res, T* __restrict__ out,
                          const at::opmath_type<T>* __restrict__ scale, const at::opmath_type<T>* __restrict__ shift,
                          int64_t C) {
  using acc_t = at::opmath_type<T>;
  if constexpr (mode == Epilogue::kCopy) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) out[c] = y[c];
  } else if constexpr (mode == Epilogue::kGlu) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const acc_t za = static_cast<acc_t>(y[c]) * scale[c] + shift[c];
      const acc_t zb = static_cast<acc_t>(y[c + C]) * scale[c + C] + shift[c + C];
      out[c] = static_cast<T>(za * sigmoid(zb));
    }
  } else {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c)
      out[c] = static_cast<T>(static_cast<acc_t>(res[c]) + static_cast<acc_t>(y[c]) * scale[c] + shift[c]);
  }
}

// dz: the gradient of z = y * scale + shift given the gradient g of the epilogue's output.
// Reduction: s1 += dz, s2 += dz * (y - center), per conv channel.
template <typename T, Epilogue mode>
inline void reduce_pixel(const T* __restrict__ y, const T* __restrict__ g, const at::opmath_type<T>* __restrict__ scale,
                         const at::opmath_type<T>* __restrict__ shift, const at::opmath_type<T>* __restrict__ center,
                         double* __restrict__ s1, double* __restrict__ s2, int64_t C) {
  using acc_t = at::opmath_type<T>;
  if constexpr (mode == Epilogue::kGlu) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const acc_t ya = static_cast<acc_t>(y[c]), yb = static_cast<acc_t>(y[c + C]);
      const auto dz = glu_grad(ya, yb, static_cast<acc_t>(g[c]), scale[c], shift[c], scale[c + C], shift[c + C]);
      s1[c] += static_cast<double>(dz.a);
      s2[c] += static_cast<double>(dz.a * (ya - center[c]));
      s1[c + C] += static_cast<double>(dz.b);
      s2[c + C] += static_cast<double>(dz.b * (yb - center[c + C]));
    }
  } else {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const acc_t gv = static_cast<acc_t>(g[c]);
      s1[c] += static_cast<double>(gv);
      s2[c] += static_cast<double>(gv * (static_cast<acc_t>(y[c]) - center[c]));
    }
  }
}

// grad_y = A * dz + B * (y - center) + D.
template <typename T, Epilogue mode>
inline void apply_pixel(const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ gy,
                        const at::opmath_type<T>* __restrict__ scale, const at::opmath_type<T>* __restrict__ shift,
                        const at::opmath_type<T>* __restrict__ center, const at::opmath_type<T>* __restrict__ A,
                        const at::opmath_type<T>* __restrict__ B, const at::opmath_type<T>* __restrict__ D, int64_t C) {
  using acc_t = at::opmath_type<T>;
  if constexpr (mode == Epilogue::kCopy) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) gy[c] = g[c];
  } else if constexpr (mode == Epilogue::kGlu) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const acc_t ya = static_cast<acc_t>(y[c]), yb = static_cast<acc_t>(y[c + C]);
      const auto dz = glu_grad(ya, yb, static_cast<acc_t>(g[c]), scale[c], shift[c], scale[c + C], shift[c + C]);
      gy[c] = static_cast<T>(A[c] * dz.a + B[c] * (ya - center[c]) + D[c]);
      gy[c + C] = static_cast<T>(A[c + C] * dz.b + B[c + C] * (yb - center[c + C]) + D[c + C]);
    }
  } else {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const acc_t gv = static_cast<acc_t>(g[c]);
      gy[c] = static_cast<T>(A[c] * gv + B[c] * (static_cast<acc_t>(y[c]) - center[c]) + D[c]);
    }
  }
}

// ---- phase weights ---------------------------------------------------------------------------

// The 16 phase taps of one output channel o, straight-line so that the loop over c vectorizes:
// k_phase[c * 4 + r * 2 + s] for phase = 2a + b (contiguous (4 Co, Ci, 2, 2)); fold_first/last
// spelled out: rows a=0 -> {w0, w1 + w2}, a=1 -> {w0 + w1, w2}, likewise columns.
template <typename T>
void fold_channel(const T* __restrict__ w, T* __restrict__ k0, T* __restrict__ k1, T* __restrict__ k2,
                  T* __restrict__ k3, int64_t Ci) {
  using acc_t = at::opmath_type<T>;
#pragma omp simd
  for (int64_t c = 0; c < Ci; ++c) {
    acc_t v[9];
    for (int t = 0; t < 9; ++t) v[t] = static_cast<acc_t>(w[c * 9 + t]);
    acc_t rows[2][2][3];  // rows[a][r][j]
    for (int j = 0; j < 3; ++j) {
      rows[0][0][j] = v[j];
      rows[0][1][j] = v[3 + j] + v[6 + j];
      rows[1][0][j] = v[j] + v[3 + j];
      rows[1][1][j] = v[6 + j];
    }
    T* const out[4] = {k0, k1, k2, k3};
    for (int a = 0; a < 2; ++a) {
      for (int r = 0; r < 2; ++r) {
        const acc_t* q = rows[a][r];
        out[a * 2][c * 4 + r * 2] = static_cast<T>(q[0]);
        out[a * 2][c * 4 + r * 2 + 1] = static_cast<T>(q[1] + q[2]);
        out[a * 2 + 1][c * 4 + r * 2] = static_cast<T>(q[0] + q[1]);
        out[a * 2 + 1][c * 4 + r * 2 + 1] = static_cast<T>(q[2]);
      }
    }
  }
}

template <typename T>
void fold_kernel(const T* w, T* k, int64_t Co, int64_t Ci) {
  at::parallel_for(0, Co, 4, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int64_t stride = Co * Ci * 4;  // one phase block
      T* ko = k + o * Ci * 4;
      fold_channel(w + o * Ci * 9, ko, ko + stride, ko + 2 * stride, ko + 3 * stride, Ci);
    }
  });
}

// dk: (4 Co, Ci, 2, 2) with any strides. dW[o, c, i, j] = sum over the phases (a, b) of the tap
// (unfold_tap(a, i), unfold_tap(b, j)).
template <typename T>
void unfold_kernel(const T* dk, at::IntArrayRef dk_strides, T* dw, int64_t Co, int64_t Ci) {
  using acc_t = at::opmath_type<T>;
  const int64_t so = dk_strides[0], sc = dk_strides[1], sr = dk_strides[2], ss = dk_strides[3];
  at::parallel_for(0, Co, 4, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      for (int64_t c = 0; c < Ci; ++c) {
        acc_t taps[2][2][2][2];  // taps[a][b][r][s]
        for (int a = 0; a < 2; ++a)
          for (int b = 0; b < 2; ++b)
            for (int r = 0; r < 2; ++r)
              for (int s = 0; s < 2; ++s)
                taps[a][b][r][s] = static_cast<acc_t>(dk[((a * 2 + b) * Co + o) * so + c * sc + r * sr + s * ss]);
        T* w9 = dw + (o * Ci + c) * 9;
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) {
            acc_t sum = 0;
            for (int a = 0; a < 2; ++a)
              for (int b = 0; b < 2; ++b) sum += taps[a][b][unfold_tap(a, i)][unfold_tap(b, j)];
            w9[i * 3 + j] = static_cast<T>(sum);
          }
      }
    }
  });
}

// ---- phase im2col (the GEMM path for small maps) --------------------------------------------

// dst[c * 4 + k] = src[k][c] for k < 4 (an im2col row: the four taps interleaved per channel).
template <typename T>
void interleave4(const T* const* src, T* __restrict__ dst, int64_t C) {
  int64_t c0 = 0;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    for (; c0 + 8 <= C; c0 += 8) {  // a 4x8 transpose: a0 b0 c0 d0 a1 b1 c1 d1 ...
      const __m256 a = _mm256_loadu_ps(src[0] + c0), b = _mm256_loadu_ps(src[1] + c0);
      const __m256 c = _mm256_loadu_ps(src[2] + c0), d = _mm256_loadu_ps(src[3] + c0);
      const __m256 t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);
      const __m256 t2 = _mm256_unpacklo_ps(c, d), t3 = _mm256_unpackhi_ps(c, d);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
      float* out = dst + c0 * 4;
      _mm256_storeu_ps(out, _mm256_permute2f128_ps(u0, u1, 0x20));
      _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
      _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
      _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
    }
  }
#endif
  for (int64_t c = c0; c < C; ++c)
    for (int k = 0; k < 4; ++k) dst[c * 4 + k] = src[k][c];
}

// cols[(n * H + p) * W + t][c * 4 + r * 2 + s] = x[n, c, p + a - 1 + r, t + b - 1 + s] (0 outside).
template <typename T>
void im2col_kernel(const T* x, T* cols, const PhaseGeom& g, int phase, int64_t Ci) {
  const int64_t H = g.H, W = g.W, a = phase / 2, b = phase % 2;
  at::parallel_for(0, g.N * H * W, 16, [&](int64_t begin, int64_t end) {
    const std::vector<T> zeros(Ci, T(0));
    for (int64_t m = begin; m < end; ++m) {
      const int64_t n = m / (H * W), p = (m / W) % H, t = m % W;
      const T* taps[4];
      for (int64_t rs = 0; rs < 4; ++rs) {
        const int64_t q = p + a - 1 + rs / 2, v = t + b - 1 + rs % 2;
        taps[rs] = (q < 0 || q >= H || v < 0 || v >= W) ? zeros.data() : x + ((n * H + q) * W + v) * Ci;
      }
      interleave4(taps, cols + m * 4 * Ci, Ci);
    }
  });
}

// The adjoint, accumulated: gx[n, c, q, v] += cols[(n, q - (a - 1 + r), v - (b - 1 + s))][(c, r, s)].
template <typename T>
void col2im_add_kernel(const T* cols, T* gx, const PhaseGeom& g, int phase, int64_t Ci) {
  using acc_t = at::opmath_type<T>;
  const int64_t H = g.H, W = g.W, a = phase / 2, b = phase % 2;
  at::parallel_for(0, g.N * H * W, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const int64_t n = m / (H * W), q = (m / W) % H, v = m % W;
      T* __restrict__ dst = gx + m * Ci;
      for (int64_t r = 0; r < 2; ++r) {
        for (int64_t s = 0; s < 2; ++s) {
          const int64_t p = q - (a - 1 + r), t = v - (b - 1 + s);
          if (p < 0 || p >= H || t < 0 || t >= W) continue;
          const T* __restrict__ src = cols + ((n * H + p) * W + t) * 4 * Ci + r * 2 + s;
#pragma omp simd
          for (int64_t c = 0; c < Ci; ++c)
            dst[c] = static_cast<T>(static_cast<acc_t>(dst[c]) + static_cast<acc_t>(src[c * 4]));
        }
      }
    }
  });
}

// ---- batch statistics ------------------------------------------------------------------------

template <typename T, int64_t CT>
void channel_stats_kernel(const at::Tensor& y_t, const PhaseGeom& g, const at::Tensor& mean_t,
                          const at::Tensor& var_t) {
  using acc_t = at::opmath_type<T>;
  const T* y = y_t.const_data_ptr<T>();
  const int64_t Co = g.Co, Ho = g.Hout(), Wo = g.Wout();
  const PhaseLayout L = g.layout();
  const std::vector<int64_t> cols = column_offsets(L, Wo);
  ThreadSums sums(Co, 2);
  const int64_t C = CT ? CT : Co;
  at::parallel_for(0, g.N * Ho, row_grain(g), [&](int64_t begin, int64_t end) {
    double s_local[CT + (CT == 0)] = {}, q_local[CT + (CT == 0)] = {};
    double* s = CT ? s_local : sums.mine(0);
    double* q = CT ? q_local : sums.mine(1);
    for (int64_t row = begin; row < end; ++row) {
      const T* yrow = y + L.row_offset(row / Ho, row % Ho);
      for (int64_t u = 0; u < Wo; ++u) stats_pixel(yrow + cols[u], s, q, C);
    }
    if (CT) sums.add(s, q);
  });
  acc_t* mean = mean_t.mutable_data_ptr<acc_t>();
  acc_t* var = var_t.mutable_data_ptr<acc_t>();
  const double inv_m = 1.0 / static_cast<double>(g.count());
  for (int64_t c = 0; c < Co; ++c) {
    const double m = sums.total(0, c) * inv_m;
    mean[c] = static_cast<acc_t>(m);
    var[c] = static_cast<acc_t>(std::max(sums.total(1, c) * inv_m - m * m, 0.0));
  }
}

// ---- forward epilogue ------------------------------------------------------------------------

template <typename T, Epilogue mode, int64_t CT>
void forward_kernel(const at::Tensor& y_t, const PhaseGeom& g, const at::Tensor& scale_t, const at::Tensor& shift_t,
                    const at::Tensor& residual_t, const at::Tensor& out_t) {
  using acc_t = at::opmath_type<T>;
  const T* y = y_t.const_data_ptr<T>();
  const acc_t* scale = ptr<acc_t>(scale_t);
  const acc_t* shift = ptr<acc_t>(shift_t);
  const int64_t Ho = g.Hout(), Wo = g.Wout();
  const PhaseLayout L = g.layout();
  const int64_t Cout = epilogue_channels(mode, g);
  const CallerRows<T> out(out_t, Cout, Ho, Wo);
  const CallerRows<T> res(residual_t, Cout, Ho, Wo);
  const std::vector<int64_t> cols = column_offsets(L, Wo);
  const int64_t C = CT ? CT : Cout;
  at::parallel_for(0, g.N * Ho, row_grain(g), [&](int64_t begin, int64_t end) {
    std::vector<T> out_buf(out.buffer_size()), res_buf(res.buffer_size());
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho, r = row % Ho;
      const T* yrow = y + L.row_offset(n, r);
      T* orow = out.row(n, r, out_buf.data());
      const T* rrow = mode == Epilogue::kResidual ? res.read(n, r, res_buf.data()) : nullptr;
      for (int64_t u = 0; u < Wo; ++u) {
        forward_pixel<T, mode>(yrow + cols[u], rrow ? rrow + u * C : nullptr, orow + u * C, scale, shift, C);
      }
      out.flush(n, r, out_buf.data());
    }
  });
}

// ---- backward --------------------------------------------------------------------------------

template <typename T, Epilogue mode, int64_t CT>
void reduce_kernel(const at::Tensor& grad_t, const at::Tensor& y_t, const PhaseGeom& g, const at::Tensor& scale_t,
                   const at::Tensor& shift_t, const at::Tensor& center_t, const at::Tensor& r1_t,
                   const at::Tensor& r2_t) {
  using acc_t = at::opmath_type<T>;
  const T* y = y_t.const_data_ptr<T>();
  const acc_t* scale = ptr<acc_t>(scale_t);
  const acc_t* shift = ptr<acc_t>(shift_t);
  const acc_t* center = center_t.const_data_ptr<acc_t>();
  const int64_t Co = g.Co, Ho = g.Hout(), Wo = g.Wout();
  const PhaseLayout L = g.layout();
  const int64_t Cg = epilogue_channels(mode, g);
  const CallerRows<T> grad(grad_t, Cg, Ho, Wo);
  const std::vector<int64_t> cols = column_offsets(L, Wo);
  ThreadSums sums(Co, 2);
  const int64_t C = CT ? CT : Cg;
  at::parallel_for(0, g.N * Ho, row_grain(g), [&](int64_t begin, int64_t end) {
    std::vector<T> grad_buf(grad.buffer_size());
    // the conv channels of CT per-pixel ones (1 unused value for a runtime count)
    double s1_local[(mode == Epilogue::kGlu ? 2 : 1) * CT + (CT == 0)] = {};
    double s2_local[(mode == Epilogue::kGlu ? 2 : 1) * CT + (CT == 0)] = {};
    double* s1 = CT ? s1_local : sums.mine(0);
    double* s2 = CT ? s2_local : sums.mine(1);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho, r = row % Ho;
      const T* yrow = y + L.row_offset(n, r);
      const T* grow = grad.read(n, r, grad_buf.data());
      for (int64_t u = 0; u < Wo; ++u) {
        reduce_pixel<T, mode>(yrow + cols[u], grow + u * C, scale, shift, center, s1, s2, C);
      }
    }
    if (CT) sums.add(s1, s2);
  });
  acc_t* r1 = r1_t.mutable_data_ptr<acc_t>();
  acc_t* r2 = r2_t.mutable_data_ptr<acc_t>();
  for (int64_t c = 0; c < Co; ++c) {
    r1[c] = static_cast<acc_t>(sums.total(0, c));
    r2[c] = static_cast<acc_t>(sums.total(1, c));
  }
}

// The positions of the 2x2-phase output that no phase uses: zero gradient.
template <typename T>
void zero_unused_border(T* gy, const PhaseGeom& g) {
  const int64_t Co = g.Co, Hy = g.Hy(), Wy = g.Wy(), Cy = 4 * g.Co;
  auto zero = [&](int64_t n, int64_t q, int64_t t, int64_t phase) {
    std::fill_n(gy + ((n * Hy + q) * Wy + t) * Cy + phase * Co, Co, T(0));
  };
  at::parallel_for(0, g.N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t t = 0; t < Wy; ++t) {  // phase row a = 0 never reads row H; a = 1 never row 0
        zero(n, g.H, t, 0), zero(n, g.H, t, 1), zero(n, 0, t, 2), zero(n, 0, t, 3);
      }
      for (int64_t q = 0; q < Hy; ++q) {  // likewise columns: b = 0 never reads col W, b = 1 never col 0
        zero(n, q, g.W, 0), zero(n, q, g.W, 2), zero(n, q, 0, 1), zero(n, q, 0, 3);
      }
    }
  });
}

template <typename T, Epilogue mode, int64_t CT>
void apply_kernel(const at::Tensor& grad_t, const at::Tensor& y_t, const PhaseGeom& g, const at::Tensor& scale_t,
                  const at::Tensor& shift_t, const at::Tensor& center_t, const at::Tensor& A_t, const at::Tensor& B_t,
                  const at::Tensor& D_t, const at::Tensor& grad_y_t) {
  using acc_t = at::opmath_type<T>;
  const T* y = ptr<T>(y_t);
  const acc_t* scale = ptr<acc_t>(scale_t);
  const acc_t* shift = ptr<acc_t>(shift_t);
  const acc_t* center = ptr<acc_t>(center_t);
  const acc_t* A = ptr<acc_t>(A_t);
  const acc_t* B = ptr<acc_t>(B_t);
  const acc_t* D = ptr<acc_t>(D_t);
  T* gy = grad_y_t.mutable_data_ptr<T>();
  const int64_t Ho = g.Hout(), Wo = g.Wout();
  const PhaseLayout L = g.layout();
  const int64_t Cg = epilogue_channels(mode, g);
  const CallerRows<T> grad(grad_t, Cg, Ho, Wo);
  const std::vector<int64_t> cols = column_offsets(L, Wo);
  const int64_t C = CT ? CT : Cg;
  at::parallel_for(0, g.N * Ho, row_grain(g), [&](int64_t begin, int64_t end) {
    std::vector<T> grad_buf(grad.buffer_size());
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho, r = row % Ho;
      const int64_t row_off = L.row_offset(n, r);
      const T* grow = grad.read(n, r, grad_buf.data());
      for (int64_t u = 0; u < Wo; ++u) {
        const int64_t off = row_off + cols[u];
        apply_pixel<T, mode>(y ? y + off : nullptr, grow + u * C, gy + off, scale, shift, center, A, B, D, C);
      }
    }
  });
  if (L.pad) zero_unused_border(gy, g);
}

// ---- the Kernels interface of blocks.h -------------------------------------------------------

at::Tensor dense_vec(const at::Tensor& t) {
  return t.defined() ? t.contiguous() : t;
}

// KERNEL<scalar_t, mode, C> for the epilogue's channel count (with_channel_count).
#define BLOCKS_DISPATCH_CASE(MODE, KERNEL, ...)                                                                     \
  case MODE:                                                                                                        \
    with_channel_count<scalar_t>(epilogue_channels(MODE, g),                                                        \
                                 [&](auto count) { KERNEL<scalar_t, MODE, decltype(count)::value>(__VA_ARGS__); }); \
    break;

#define BLOCKS_DISPATCH_MODE(mode, KERNEL, ...)                    \
  switch (mode) {                                                  \
    BLOCKS_DISPATCH_CASE(Epilogue::kCopy, KERNEL, __VA_ARGS__)     \
    BLOCKS_DISPATCH_CASE(Epilogue::kGlu, KERNEL, __VA_ARGS__)      \
    BLOCKS_DISPATCH_CASE(Epilogue::kResidual, KERNEL, __VA_ARGS__) \
  }

struct CpuBlockKernels {
  static at::Tensor fold_phase_weight(const at::Tensor& w) {
    at::Tensor k = at::empty({4 * w.size(0), w.size(1), 2, 2}, w.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "fold_phase_weight_cpu", [&] {
      fold_kernel<scalar_t>(w.const_data_ptr<scalar_t>(), k.mutable_data_ptr<scalar_t>(), w.size(0), w.size(1));
    });
    return k;
  }

  static at::Tensor unfold_phase_grad(const at::Tensor& dk) {
    at::Tensor dw = at::empty({dk.size(0) / 4, dk.size(1), 3, 3}, dk.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dk.scalar_type(), "unfold_phase_grad_cpu", [&] {
      unfold_kernel<scalar_t>(dk.const_data_ptr<scalar_t>(), dk.strides(), dw.mutable_data_ptr<scalar_t>(), dw.size(0),
                              dw.size(1));
    });
    return dw;
  }

  static void im2col_phase(const at::Tensor& x_cl, const PhaseGeom& g, int phase, const at::Tensor& cols) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_cl.scalar_type(), "im2col_phase_cpu", [&] {
      im2col_kernel<scalar_t>(x_cl.const_data_ptr<scalar_t>(), cols.mutable_data_ptr<scalar_t>(), g, phase,
                              x_cl.size(1));
    });
  }

  static void col2im_phase_add(const at::Tensor& cols, const PhaseGeom& g, int phase, const at::Tensor& gx) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cols.scalar_type(), "col2im_phase_add_cpu", [&] {
      col2im_add_kernel<scalar_t>(cols.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(), g, phase,
                                  gx.size(1));
    });
  }

  static void channel_stats(const at::Tensor& y, const PhaseGeom& g, const at::Tensor& mean, const at::Tensor& var) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "channel_stats_cpu", [&] {
      with_channel_count<scalar_t>(
          g.Co, [&](auto ct) { channel_stats_kernel<scalar_t, decltype(ct)::value>(y, g, mean, var); });
    });
  }

  static void forward_epilogue(Epilogue mode, const at::Tensor& y, const PhaseGeom& g, const at::Tensor& scale,
                               const at::Tensor& shift, const at::Tensor& residual, const at::Tensor& out) {
    const at::Tensor sc = dense_vec(scale), sh = dense_vec(shift);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "forward_epilogue_cpu",
                                    [&] { BLOCKS_DISPATCH_MODE(mode, forward_kernel, y, g, sc, sh, residual, out) });
  }

  static void backward_reduce(Epilogue mode, const at::Tensor& grad_out, const at::Tensor& y, const PhaseGeom& g,
                              const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& center,
                              const at::Tensor& r1, const at::Tensor& r2) {
    TORCH_INTERNAL_ASSERT(mode != Epilogue::kCopy);
    const at::Tensor grad = grad_out.to(y.scalar_type());
    const at::Tensor sc = dense_vec(scale), sh = dense_vec(shift), ct = dense_vec(center);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "backward_reduce_cpu", [&] {
      with_channel_count<scalar_t>(epilogue_channels(mode, g), [&](auto c) {
        if (mode == Epilogue::kGlu) {
          reduce_kernel<scalar_t, Epilogue::kGlu, decltype(c)::value>(grad, y, g, sc, sh, ct, r1, r2);
        } else {
          reduce_kernel<scalar_t, Epilogue::kResidual, decltype(c)::value>(grad, y, g, sc, sh, ct, r1, r2);
        }
      });
    });
  }

  static void backward_apply(Epilogue mode, const at::Tensor& grad_out, const at::Tensor& y, const PhaseGeom& g,
                             const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& center,
                             const at::Tensor& A, const at::Tensor& B, const at::Tensor& D, const at::Tensor& grad_y) {
    const at::Tensor grad = grad_out.to(grad_y.scalar_type());
    const at::Tensor sc = dense_vec(scale), sh = dense_vec(shift), ct = dense_vec(center);
    const at::Tensor a = dense_vec(A), b = dense_vec(B), d = dense_vec(D);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_y.scalar_type(), "backward_apply_cpu", [&] {
      BLOCKS_DISPATCH_MODE(mode, apply_kernel, grad, y, g, sc, sh, ct, a, b, d, grad_y)
    });
  }
};

#undef BLOCKS_DISPATCH_MODE
#undef BLOCKS_DISPATCH_CASE

}  // namespace

TORCH_LIBRARY_IMPL(attngan_fast, CPU, m) {
  m.impl("upsample_conv3x3", &upsample_conv3x3<CpuBlockKernels>);
  m.impl("upsample_conv3x3_backward", &upsample_conv3x3_backward<CpuBlockKernels>);
  m.impl("up_block", &up_block<CpuBlockKernels>);
  m.impl("up_block_backward", &up_block_backward<CpuBlockKernels>);
  m.impl("res_block", &res_block<CpuBlockKernels>);
  m.impl("res_block_backward", &res_block_backward<CpuBlockKernels>);
}

}  // namespace blocks
}  // namespace attngan_fast
