// The generator blocks on the CPU: batch statistics and the fused epilogues (see blocks.h).
//
// Every kernel walks the rows (n, r) of the S*H x S*W output map, one row per task, with the
// channels innermost (contiguous in the NHWC conv output, so the inner loops vectorize). Caller
// tensors in NCHW go through a per-row transpose buffer; channels_last ones are read in place.
#include "blocks.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace attngan_fast {
namespace blocks {
namespace {

// exp for float in a form the compiler vectorizes (glibc's expf has no SIMD variant without
// -ffast-math, and std::floor blocks vectorization): Cody-Waite range reduction x = k ln2 + r,
// |r| <= ln2/2, with k rounded by the 1.5 * 2^23 trick, a degree-6 polynomial for e^r, and 2^k
// through the exponent bits. Relative error ~2 ulp on [-87, 88].
inline float exp_simd(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: (v + kRound) - kRound rounds v to an integer
  const float k = (x * 1.44269504088896341f + kRound) - kRound;
  float r = x - k * 0.693359375f;
  r = r + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

template <typename acc_t>
inline acc_t sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + std::exp(-x));
}

template <>
inline float sigmoid<float>(float x) {
  return 1.0f / (1.0f + exp_simd(-x));
}

// A caller tensor (N, C, Ho, Wo), NCHW- or NHWC-dense, seen one output row at a time as a
// (Wo x C) channels-fastest block: in place for NHWC, through a buffer for NCHW (transposed one
// channel at a time: contiguous on the NCHW side, strided in the L1-resident buffer).
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

  const T* read(int64_t n, int64_t r, T* __restrict__ buf) const {
    if (nhwc) return data + (n * Ho + r) * Wo * C;
    const int64_t plane = Ho * Wo, channels = C, width = Wo;
    const T* __restrict__ base = data + n * C * plane + r * Wo;
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t u = 0; u < width; ++u) buf[u * channels + c] = base[c * plane + u];
    return buf;
  }

  T* row(int64_t n, int64_t r, T* buf) const { return nhwc ? data + (n * Ho + r) * Wo * C : buf; }

  void flush(int64_t n, int64_t r, const T* __restrict__ buf) const {
    if (nhwc) return;
    const int64_t plane = Ho * Wo, channels = C, width = Wo;
    T* __restrict__ base = data + n * C * plane + r * Wo;
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t u = 0; u < width; ++u) base[c * plane + u] = buf[u * channels + c];
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

// Per-thread double accumulators of `width` values, `count` arrays each, summed at the end.
struct ThreadSums {
  int64_t width, count, threads;
  std::vector<double> data;
  ThreadSums(int64_t width_, int64_t count_)
      : width(width_),
        count(count_),
        threads(at::get_num_threads()),
        data(static_cast<size_t>(threads * width_ * count_), 0.0) {}
  double* mine(int64_t k) { return data.data() + (at::get_thread_num() * count + k) * width; }
  double total(int64_t k, int64_t c) const {
    double s = 0;
    for (int64_t t = 0; t < threads; ++t) s += data[(t * count + k) * width + c];
    return s;
  }
};

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
      const acc_t za = ya * scale[c] + shift[c];
      const acc_t sb = sigmoid(yb * scale[c + C] + shift[c + C]);
      const acc_t gv = static_cast<acc_t>(g[c]);
      const acc_t dza = gv * sb, dzb = gv * za * sb * (acc_t(1) - sb);
      s1[c] += static_cast<double>(dza);
      s2[c] += static_cast<double>(dza * (ya - center[c]));
      s1[c + C] += static_cast<double>(dzb);
      s2[c + C] += static_cast<double>(dzb * (yb - center[c + C]));
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
      const acc_t za = ya * scale[c] + shift[c];
      const acc_t sb = sigmoid(yb * scale[c + C] + shift[c + C]);
      const acc_t gv = static_cast<acc_t>(g[c]);
      const acc_t dza = gv * sb, dzb = gv * za * sb * (acc_t(1) - sb);
      gy[c] = static_cast<T>(A[c] * dza + B[c] * (ya - center[c]) + D[c]);
      gy[c + C] = static_cast<T>(A[c + C] * dzb + B[c + C] * (yb - center[c + C]) + D[c + C]);
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

template <typename T>
void fold_kernel(const T* w, T* k, int64_t Co, int64_t Ci) {
  using acc_t = at::opmath_type<T>;
  // k[((phase * Co + o) * 2 + r) * 2 + s][c]  (channels_last (4 Co, Ci, 2, 2))
  at::parallel_for(0, 4 * Co, 16, [&](int64_t begin, int64_t end) {
    for (int64_t po = begin; po < end; ++po) {
      const int a = static_cast<int>(po / Co) / 2, b = static_cast<int>(po / Co) % 2;
      const T* wo = w + (po % Co) * Ci * 9;
      for (int r = 0; r < 2; ++r) {
        for (int s = 0; s < 2; ++s) {
          T* kp = k + (po * 4 + r * 2 + s) * Ci;
          for (int64_t c = 0; c < Ci; ++c) {
            acc_t sum = 0;
            for (int i = fold_first(a, r); i <= fold_last(a, r); ++i)
              for (int j = fold_first(b, s); j <= fold_last(b, s); ++j) sum += static_cast<acc_t>(wo[c * 9 + i * 3 + j]);
            kp[c] = static_cast<T>(sum);
          }
        }
      }
    }
  });
}

// dk: (4 Co, Ci, 2, 2) with any strides.
template <typename T>
void unfold_kernel(const T* dk, at::IntArrayRef dk_strides, T* dw, int64_t Co, int64_t Ci) {
  using acc_t = at::opmath_type<T>;
  const int64_t so = dk_strides[0], sc = dk_strides[1], sr = dk_strides[2], ss = dk_strides[3];
  at::parallel_for(0, Co, 4, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      for (int64_t c = 0; c < Ci; ++c) {
        for (int i = 0; i < 3; ++i) {
          for (int j = 0; j < 3; ++j) {
            acc_t sum = 0;
            for (int a = 0; a < 2; ++a)
              for (int b = 0; b < 2; ++b)
                sum += static_cast<acc_t>(
                    dk[((a * 2 + b) * Co + o) * so + c * sc + unfold_tap(a, i) * sr + unfold_tap(b, j) * ss]);
            dw[((o * Ci + c) * 3 + i) * 3 + j] = static_cast<T>(sum);
          }
        }
      }
    }
  });
}

// ---- phase im2col (the GEMM path for small maps) --------------------------------------------

// cols[phase][(n * H + p) * W + t][(r * 2 + s) * Ci + c] = x[n, c, p + a - 1 + r, t + b - 1 + s] (0 outside).
template <typename T>
void im2col_kernel(const T* x, T* cols, const PhaseGeom& g, int64_t Ci) {
  const int64_t H = g.H, W = g.W, M = g.N * H * W;
  at::parallel_for(0, 4 * M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t pm = begin; pm < end; ++pm) {
      const int64_t phase = pm / M, m = pm % M, a = phase / 2, b = phase % 2;
      const int64_t n = m / (H * W), p = (m / W) % H, t = m % W;
      T* row = cols + pm * 4 * Ci;
      for (int64_t r = 0; r < 2; ++r) {
        for (int64_t s = 0; s < 2; ++s) {
          const int64_t q = p + a - 1 + r, v = t + b - 1 + s;
          T* dst = row + (r * 2 + s) * Ci;
          if (q < 0 || q >= H || v < 0 || v >= W) {
            std::fill_n(dst, Ci, T(0));
          } else {
            std::copy_n(x + ((n * H + q) * W + v) * Ci, Ci, dst);
          }
        }
      }
    }
  });
}

// The adjoint: grad_x[n, c, q, v] = sum over (phase, r, s) with q = p + a - 1 + r, v = t + b - 1 + s.
template <typename T>
void col2im_kernel(const T* cols, T* gx, const PhaseGeom& g, int64_t Ci) {
  using acc_t = at::opmath_type<T>;
  const int64_t H = g.H, W = g.W, M = g.N * H * W;
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(Ci);
    for (int64_t m = begin; m < end; ++m) {
      const int64_t n = m / (H * W), q = (m / W) % H, v = m % W;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t phase = 0; phase < 4; ++phase) {
        const int64_t a = phase / 2, b = phase % 2;
        for (int64_t r = 0; r < 2; ++r) {
          for (int64_t s = 0; s < 2; ++s) {
            const int64_t p = q - (a - 1 + r), t = v - (b - 1 + s);
            if (p < 0 || p >= H || t < 0 || t >= W) continue;
            const T* __restrict__ src = cols + ((phase * M + (n * H + p) * W + t) * 4 + r * 2 + s) * Ci;
            acc_t* __restrict__ dst = acc.data();
#pragma omp simd
            for (int64_t c = 0; c < Ci; ++c) dst[c] += static_cast<acc_t>(src[c]);
          }
        }
      }
      for (int64_t c = 0; c < Ci; ++c) gx[m * Ci + c] = static_cast<T>(acc[c]);
    }
  });
}

// ---- batch statistics ------------------------------------------------------------------------

template <typename T>
void channel_stats_kernel(const at::Tensor& y_t, const PhaseGeom& g, const at::Tensor& mean_t,
                          const at::Tensor& var_t) {
  using acc_t = at::opmath_type<T>;
  const T* y = y_t.const_data_ptr<T>();
  const int64_t Co = g.Co, Ho = g.Hout(), Wo = g.Wout();
  const PhaseLayout L = g.layout();
  ThreadSums sums(Co, 2);
  at::parallel_for(0, g.N * Ho, row_grain(g), [&](int64_t begin, int64_t end) {
    double* s = sums.mine(0);
    double* q = sums.mine(1);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho, r = row % Ho;
      for (int64_t u = 0; u < Wo; ++u) stats_pixel(y + L.offset(n, r, u), s, q, Co);
    }
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

template <typename T, Epilogue mode>
void forward_kernel(const at::Tensor& y_t, const PhaseGeom& g, const at::Tensor& scale_t, const at::Tensor& shift_t,
                    const at::Tensor& residual_t, const at::Tensor& out_t) {
  using acc_t = at::opmath_type<T>;
  const T* y = y_t.const_data_ptr<T>();
  const acc_t* scale = ptr<acc_t>(scale_t);
  const acc_t* shift = ptr<acc_t>(shift_t);
  const int64_t Co = g.Co, Ho = g.Hout(), Wo = g.Wout();
  const PhaseLayout L = g.layout();
  const int64_t Cout = mode == Epilogue::kGlu ? Co / 2 : Co;
  const CallerRows<T> out(out_t, Cout, Ho, Wo);
  const CallerRows<T> res(residual_t, Cout, Ho, Wo);
  at::parallel_for(0, g.N * Ho, row_grain(g), [&](int64_t begin, int64_t end) {
    std::vector<T> out_buf(out.buffer_size()), res_buf(res.buffer_size());
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho, r = row % Ho;
      T* orow = out.row(n, r, out_buf.data());
      const T* rrow = mode == Epilogue::kResidual ? res.read(n, r, res_buf.data()) : nullptr;
      for (int64_t u = 0; u < Wo; ++u) {
        forward_pixel<T, mode>(y + L.offset(n, r, u), rrow ? rrow + u * Cout : nullptr,
                               orow + u * Cout, scale, shift, Cout);
      }
      out.flush(n, r, out_buf.data());
    }
  });
}

// ---- backward --------------------------------------------------------------------------------

template <typename T, Epilogue mode>
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
  const int64_t Cg = mode == Epilogue::kGlu ? Co / 2 : Co;
  const CallerRows<T> grad(grad_t, Cg, Ho, Wo);
  ThreadSums sums(Co, 2);
  at::parallel_for(0, g.N * Ho, row_grain(g), [&](int64_t begin, int64_t end) {
    std::vector<T> grad_buf(grad.buffer_size());
    double* s1 = sums.mine(0);
    double* s2 = sums.mine(1);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho, r = row % Ho;
      const T* grow = grad.read(n, r, grad_buf.data());
      for (int64_t u = 0; u < Wo; ++u) {
        reduce_pixel<T, mode>(y + L.offset(n, r, u), grow + u * Cg, scale, shift, center, s1, s2,
                              Cg);
      }
    }
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

template <typename T, Epilogue mode>
void apply_kernel(const at::Tensor& grad_t, const at::Tensor& y_t, const PhaseGeom& g, const at::Tensor& scale_t,
                  const at::Tensor& shift_t, const at::Tensor& center_t, const at::Tensor& A_t,
                  const at::Tensor& B_t, const at::Tensor& D_t, const at::Tensor& grad_y_t) {
  using acc_t = at::opmath_type<T>;
  const T* y = ptr<T>(y_t);
  const acc_t* scale = ptr<acc_t>(scale_t);
  const acc_t* shift = ptr<acc_t>(shift_t);
  const acc_t* center = ptr<acc_t>(center_t);
  const acc_t* A = ptr<acc_t>(A_t);
  const acc_t* B = ptr<acc_t>(B_t);
  const acc_t* D = ptr<acc_t>(D_t);
  T* gy = grad_y_t.mutable_data_ptr<T>();
  const int64_t Co = g.Co, Ho = g.Hout(), Wo = g.Wout();
  const PhaseLayout L = g.layout();
  const int64_t Cg = mode == Epilogue::kGlu ? Co / 2 : Co;
  const CallerRows<T> grad(grad_t, Cg, Ho, Wo);
  at::parallel_for(0, g.N * Ho, row_grain(g), [&](int64_t begin, int64_t end) {
    std::vector<T> grad_buf(grad.buffer_size());
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho, r = row % Ho;
      const T* grow = grad.read(n, r, grad_buf.data());
      for (int64_t u = 0; u < Wo; ++u) {
        const int64_t off = L.offset(n, r, u);
        apply_pixel<T, mode>(y ? y + off : nullptr, grow + u * Cg, gy + off, scale, shift, center, A, B, D, Cg);
      }
    }
  });
  if (L.pad) zero_unused_border(gy, g);
}

// ---- the Kernels interface of blocks.h -------------------------------------------------------

at::Tensor dense_vec(const at::Tensor& t) { return t.defined() ? t.contiguous() : t; }

#define BLOCKS_DISPATCH_MODE(mode, KERNEL, ...)                                   \
  switch (mode) {                                                                \
    case Epilogue::kCopy: KERNEL<scalar_t, Epilogue::kCopy>(__VA_ARGS__); break; \
    case Epilogue::kGlu: KERNEL<scalar_t, Epilogue::kGlu>(__VA_ARGS__); break;   \
    case Epilogue::kResidual: KERNEL<scalar_t, Epilogue::kResidual>(__VA_ARGS__); break; \
  }

struct CpuBlockKernels {
  static at::Tensor fold_phase_weight(const at::Tensor& w) {
    at::Tensor k = at::empty({4 * w.size(0), w.size(1), 2, 2}, w.options().memory_format(at::MemoryFormat::ChannelsLast));
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

  static at::Tensor im2col_phases(const at::Tensor& x_cl, const PhaseGeom& g) {
    const int64_t ci = x_cl.size(1);
    at::Tensor cols = at::empty({4, g.N * g.H * g.W, 4 * ci}, x_cl.options().memory_format(at::MemoryFormat::Contiguous));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_cl.scalar_type(), "im2col_phases_cpu", [&] {
      im2col_kernel<scalar_t>(x_cl.const_data_ptr<scalar_t>(), cols.mutable_data_ptr<scalar_t>(), g, ci);
    });
    return cols;
  }

  static at::Tensor col2im_phases(const at::Tensor& cols_in, const PhaseGeom& g, int64_t ci) {
    const at::Tensor cols = cols_in.contiguous();
    at::Tensor gx = at::empty({g.N, ci, g.H, g.W}, cols.options().memory_format(at::MemoryFormat::ChannelsLast));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cols.scalar_type(), "col2im_phases_cpu", [&] {
      col2im_kernel<scalar_t>(cols.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(), g, ci);
    });
    return gx;
  }

  static void channel_stats(const at::Tensor& y, const PhaseGeom& g, const at::Tensor& mean, const at::Tensor& var) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "channel_stats_cpu",
                                    [&] { channel_stats_kernel<scalar_t>(y, g, mean, var); });
  }

  static void forward_epilogue(Epilogue mode, const at::Tensor& y, const PhaseGeom& g, const at::Tensor& scale,
                               const at::Tensor& shift, const at::Tensor& residual, const at::Tensor& out) {
    const at::Tensor sc = dense_vec(scale), sh = dense_vec(shift);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "forward_epilogue_cpu", [&] {
      BLOCKS_DISPATCH_MODE(mode, forward_kernel, y, g, sc, sh, residual, out)
    });
  }

  static void backward_reduce(Epilogue mode, const at::Tensor& grad_out, const at::Tensor& y, const PhaseGeom& g,
                              const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& center,
                              const at::Tensor& r1, const at::Tensor& r2) {
    TORCH_INTERNAL_ASSERT(mode != Epilogue::kCopy);
    const at::Tensor grad = grad_out.to(y.scalar_type());
    const at::Tensor sc = dense_vec(scale), sh = dense_vec(shift), ct = dense_vec(center);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "backward_reduce_cpu", [&] {
      if (mode == Epilogue::kGlu) {
        reduce_kernel<scalar_t, Epilogue::kGlu>(grad, y, g, sc, sh, ct, r1, r2);
      } else {
        reduce_kernel<scalar_t, Epilogue::kResidual>(grad, y, g, sc, sh, ct, r1, r2);
      }
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
