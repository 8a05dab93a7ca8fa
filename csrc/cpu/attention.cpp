// Word-region attention (GlobalAttentionGeneral with per-sample masking) on the CPU, fused.
//
// For every region q of sample b and its unmasked words t:
//   s_t = h_q . w_t,  a = softmax_t(s),  context_q = sum_t a_t w_t.
// Masked words are dropped before any arithmetic (the words of each sample are compacted), so a
// masked word costs nothing and gets weight 0; a sample whose words are all masked gets weights 0
// and context 0 (and zero gradients).
//
// Backward (dctx given; dweights optional): a from the forward's weights when they were requested
// (reading T values per region costs less here than recomputing them), else recomputed; then
//   da_t = dctx_q . w_t (+ dweights_t),  ds_t = a_t (da_t - sum_u a_u da_u),
//   dh_q = sum_t ds_t w_t,  dw_t = sum_q (ds_t h_q + a_t dctx_q).
//
// Layout of the work: the regions of one sample are processed in tiles of kTile regions, staged
// (as fp32, zero-padded) in a per-thread workspace; inside a tile, kLanes regions form one vector
// and every word's score, weight and gradient for those regions stays in that vector. No
// B x Q x T tensor is ever written unless the weights are requested. The word gradient, a sum over
// all regions, is accumulated per chunk of kChunk regions into a fixed slot and the slots are then
// summed in a fixed order: the result does not depend on the number of threads.
//
// Cost per region with tv unmasked words: forward 2 C tv FMAs (scores, context) against 2 C values
// moved (h in, context out); backward 5 C tv FMAs (scores again, da, dh, and 2 for dw) against
// 3 C values (h, dctx in, dh out). At C = 32, T = 18 that is 9 (forward) and 15 (backward)
// FMA-lanes per byte: on a CPU core (~80 G fp32 FMA-lanes/s, ~15-25 GB/s) this is compute bound,
// so the kernels are built around FMA throughput: 16-lane vectors, two per step, register blocks
// of up to 8 words (scores) or 8 channels (context, dh) or 4 x 4 (dw) accumulators.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

namespace attngan_fast {
namespace {

constexpr int64_t kLanes = 16;             // regions per vector
constexpr int kVecs = 2;                   // vectors per step: independent chains for the FMA pipes
constexpr int64_t kStep = kVecs * kLanes;  // regions per step
constexpr int64_t kTile = 128;             // regions per staged tile (a multiple of kStep)
constexpr int64_t kChunk = 1024;           // regions per backward task, each with its own word-gradient slot
constexpr int64_t kCBlock = 8;             // channels are padded to a multiple of this (the combine block)
constexpr int64_t kTBlock = 8;             // words per projection block
constexpr int64_t kDwBlock = 4;            // (channels x words) block of the word-gradient kernel

// GCC/Clang vector extension: kLanes values of the accumulation type (fp32, or fp64 for double
// inputs), lowered to whatever SIMD the target has.
template <typename acc_t>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(kLanes * sizeof(float))));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(kLanes * sizeof(double))));
};
template <typename acc_t>
using vec_t = typename VecOf<acc_t>::type;
typedef int32_t vint __attribute__((vector_size(kLanes * sizeof(int32_t))));

template <typename acc_t>
inline vec_t<acc_t> vload(const acc_t* p) {
  vec_t<acc_t> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename acc_t>
inline void vstore(acc_t* p, vec_t<acc_t> v) {
  std::memcpy(p, &v, sizeof v);
}

template <typename V>
inline V vmax(V a, V b) {
  return a > b ? a : b;
}

// Lane sum in a fixed order.
template <typename acc_t>
inline acc_t vsum(vec_t<acc_t> v) {
  acc_t s = 0;
  for (int64_t i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// exp(x) for x <= 0 (softmax after the max is subtracted): x = n ln2 + r, |r| <= ln2 / 2,
// exp(r) by the degree-6 minimax polynomial of Cephes' expf (about 1 ulp), 2^n built in the exponent.
inline vec_t<float> vexp_nonpositive(vec_t<float> x) {
  using vfloat = vec_t<float>;
  const vfloat lo = x - x - 87.33654f;  // exp(lo) is the smallest normal float
  x = x < lo ? lo : x;
  const float round_magic = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const vfloat n = (x * 1.44269504088896341f + round_magic) - round_magic;
  const vfloat r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  vfloat p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  const vint bits = (__builtin_convertvector(n, vint) + 127) << 23;
  vfloat scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// fp64 (gradcheck only): the library exp, lane by lane.
inline vec_t<double> vexp_nonpositive(vec_t<double> x) {
  for (int64_t i = 0; i < kLanes; ++i) x[i] = std::exp(x[i]);
  return x;
}

int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

struct Geometry {
  int64_t B, C, T, Q;
  int64_t Cp;  // C rounded up to kCBlock
  int64_t Tp;  // T rounded up to kDwBlock
};

Geometry make_geometry(const at::Tensor& h, const at::Tensor& words) {
  const int64_t C = h.size(1), T = words.size(2);
  return {h.size(0),
          C,
          T,
          h.size(2) * h.size(3),
          round_up(std::max<int64_t>(C, 1), kCBlock),
          round_up(std::max<int64_t>(T, 1), kDwBlock)};
}

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

template <typename acc_t>
using Buffer = std::unique_ptr<acc_t[], AlignedFree>;

// A zero-initialised, 64-byte aligned buffer of n values.
template <typename acc_t>
Buffer<acc_t> zeros(int64_t n) {
  const size_t bytes = round_up(std::max<int64_t>(n, 1) * sizeof(acc_t), 64);
  void* p = std::aligned_alloc(64, bytes);
  TORCH_CHECK(p != nullptr, "word_region_attention: out of memory for a ", bytes, "-byte workspace");
  std::memset(p, 0, bytes);
  return Buffer<acc_t>(static_cast<acc_t*>(p));
}

// Per-thread scratch. Tiles are (rows, kTile) with rows padded (channels to Cp, words to Tp) and
// the padding kept at zero, so the vector kernels need no remainder path over channels.
template <typename acc_t>
struct Workspace {
  Buffer<acc_t> w;             // (Cp, tv) the sample's unmasked words, row stride tv
  std::vector<int64_t> valid;  // (tv,) their indices in 0..T-1
  int64_t tv = 0;              // number of unmasked words
  int64_t b = -1;              // sample held in w
  Buffer<acc_t> x;             // (Cp, kTile) h tile
  Buffer<acc_t> g;             // (Cp, kTile) grad-context tile (backward)
  Buffer<acc_t> out;           // (Cp, kTile) context or grad-h tile
  Buffer<acc_t> p;             // (Tp, kTile) scores, then weights
  Buffer<acc_t> ds;            // (Tp, kTile) grad of the weights, then of the scores (backward)
  Buffer<acc_t> dwv;           // (Cp, Tp) vectors of kLanes: word gradient, per lane (backward)

  Workspace(const Geometry& geo, bool backward)
      : w(zeros<acc_t>(geo.Cp * geo.T)),
        valid(geo.T),
        x(zeros<acc_t>(geo.Cp * kTile)),
        out(zeros<acc_t>(geo.Cp * kTile)),
        p(zeros<acc_t>(geo.Tp * kTile)) {
    if (backward) {
      g = zeros<acc_t>(geo.Cp * kTile);
      ds = zeros<acc_t>(geo.Tp * kTile);
      dwv = zeros<acc_t>(geo.Cp * geo.Tp * kLanes);
    }
  }

  // Holds sample `sample`'s unmasked words (a compacted copy in acc_t) unless already held.
  template <typename scalar_t>
  void load_words(const Geometry& geo, const scalar_t* words, const bool* mask, int64_t sample) {
    if (sample == b) return;
    b = sample;
    tv = 0;
    for (int64_t t = 0; t < geo.T; ++t) {
      if (mask == nullptr || !mask[b * geo.T + t]) valid[tv++] = t;
    }
    const scalar_t* wb = words + b * geo.C * geo.T;
    for (int64_t c = 0; c < geo.Cp; ++c) {
      for (int64_t j = 0; j < tv; ++j) w[c * tv + j] = c < geo.C ? static_cast<acc_t>(wb[c * geo.T + valid[j]]) : 0;
    }
    // Word rows tv..round_up(tv, kDwBlock) of the weight tiles enter the word-gradient blocks: keep them zero.
    const int64_t rows = round_up(tv, kDwBlock) - tv;
    std::memset(p.get() + tv * kTile, 0, rows * kTile * sizeof(acc_t));
    if (ds) std::memset(ds.get() + tv * kTile, 0, rows * kTile * sizeof(acc_t));
  }
};

// dst (rows, kTile) <- src rows [0, n) converted to acc_t, zero up to a whole step. Also asks for
// the next tile of each row (src + kTile ...) to be fetched into L2 meanwhile: with C rows far
// apart there are too many streams for the hardware prefetcher (measured: without it, the forward
// at 64x64 takes about 1.5-2x as long).
template <typename scalar_t, typename acc_t>
void stage_rows(const scalar_t* src, int64_t src_stride, int64_t rows, int64_t n, acc_t* dst) {
  const int64_t padded = round_up(n, kStep);
  constexpr int64_t kLine = 64 / sizeof(scalar_t);
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* s = src + r * src_stride;
    for (int64_t i = kTile; i < 2 * kTile; i += kLine) __builtin_prefetch(s + i, /*rw=*/0, /*locality=*/1);
    acc_t* d = dst + r * kTile;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<acc_t>(s[i]);
    for (int64_t i = n; i < padded; ++i) d[i] = 0;
  }
}

// dst rows [0, n) <- src (rows, kTile), converted to scalar_t.
template <typename scalar_t, typename acc_t>
void unstage_rows(const acc_t* src, int64_t rows, int64_t n, scalar_t* dst, int64_t dst_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const acc_t* s = src + r * kTile;
    scalar_t* d = dst + r * dst_stride;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<scalar_t>(s[i]);
  }
}

template <typename scalar_t>
void zero_rows(scalar_t* dst, int64_t rows, int64_t stride, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) std::fill(dst + r * stride, dst + r * stride + n, scalar_t(0));
}

// out[k] (one step of kStep regions, row stride kTile) = sum_c x[c] w[c][k] for TB words.
template <int TB, typename acc_t>
inline void project_block(const acc_t* x, int64_t C, const acc_t* w, int64_t ldw, acc_t* out) {
  vec_t<acc_t> acc[kVecs][TB] = {};
  for (int64_t c = 0; c < C; ++c) {
    vec_t<acc_t> xv[kVecs];
    for (int u = 0; u < kVecs; ++u) xv[u] = vload(x + c * kTile + u * kLanes);
    const acc_t* wc = w + c * ldw;
#pragma GCC unroll 8
    for (int k = 0; k < TB; ++k) {
      for (int u = 0; u < kVecs; ++u) acc[u][k] += xv[u] * wc[k];
    }
  }
#pragma GCC unroll 8
  for (int k = 0; k < TB; ++k) {
    for (int u = 0; u < kVecs; ++u) vstore(out + k * kTile + u * kLanes, acc[u][k]);
  }
}

// out[t] = sum_c x[c] w[c][t] for every held word t (scores from h, or da from dctx), in blocks of
// at most kTBlock words split evenly (18 words: 6 + 6 + 6), so that every block has many chains.
template <typename acc_t>
inline void project(const acc_t* x, int64_t C, const acc_t* w, int64_t tv, acc_t* out) {
  const int64_t blocks = (tv + kTBlock - 1) / kTBlock;
  for (int64_t i = 0, t = 0; i < blocks; ++i) {
    const int64_t tb = (tv - t) / (blocks - i);  // the remaining words over the remaining blocks
    acc_t* o = out + t * kTile;
    switch (tb) {
      case 1:
        project_block<1>(x, C, w + t, tv, o);
        break;
      case 2:
        project_block<2>(x, C, w + t, tv, o);
        break;
      case 3:
        project_block<3>(x, C, w + t, tv, o);
        break;
      case 4:
        project_block<4>(x, C, w + t, tv, o);
        break;
      case 5:
        project_block<5>(x, C, w + t, tv, o);
        break;
      case 6:
        project_block<6>(x, C, w + t, tv, o);
        break;
      case 7:
        project_block<7>(x, C, w + t, tv, o);
        break;
      default:
        project_block<kTBlock>(x, C, w + t, tv, o);
        break;
    }
    t += tb;
  }
}

// out[c] = sum_t p[t] w[c][t] for every padded channel c (context from a, or dh from ds), one step.
template <typename acc_t>
inline void combine(const acc_t* p, int64_t tv, const acc_t* w, int64_t Cp, acc_t* out) {
  for (int64_t c0 = 0; c0 < Cp; c0 += kCBlock) {
    vec_t<acc_t> acc[kVecs][kCBlock] = {};
    const acc_t* wc = w + c0 * tv;
    for (int64_t t = 0; t < tv; ++t) {
      vec_t<acc_t> pv[kVecs];
      for (int u = 0; u < kVecs; ++u) pv[u] = vload(p + t * kTile + u * kLanes);
#pragma GCC unroll 8
      for (int k = 0; k < kCBlock; ++k) {
        for (int u = 0; u < kVecs; ++u) acc[u][k] += pv[u] * wc[k * tv + t];
      }
    }
#pragma GCC unroll 8
    for (int k = 0; k < kCBlock; ++k) {
      for (int u = 0; u < kVecs; ++u) vstore(out + (c0 + k) * kTile + u * kLanes, acc[u][k]);
    }
  }
}

// In place over the tv rows of one step: scores -> softmax weights.
template <typename acc_t>
inline void softmax_step(acc_t* p, int64_t tv) {
  using vec = vec_t<acc_t>;
  vec m[kVecs], sum[kVecs] = {};
  for (int u = 0; u < kVecs; ++u) m[u] = vload(p + u * kLanes);
  for (int64_t t = 1; t < tv; ++t) {
    for (int u = 0; u < kVecs; ++u) m[u] = vmax(m[u], vload(p + t * kTile + u * kLanes));
  }
  for (int64_t t = 0; t < tv; ++t) {
    for (int u = 0; u < kVecs; ++u) {
      const vec e = vexp_nonpositive(vload(p + t * kTile + u * kLanes) - m[u]);
      vstore(p + t * kTile + u * kLanes, e);
      sum[u] += e;
    }
  }
  vec inv[kVecs];
  for (int u = 0; u < kVecs; ++u) inv[u] = acc_t(1) / sum[u];
  for (int64_t t = 0; t < tv; ++t) {
    for (int u = 0; u < kVecs; ++u) vstore(p + t * kTile + u * kLanes, vload(p + t * kTile + u * kLanes) * inv[u]);
  }
}

// In place over the tv rows of one step: da -> ds = a (da - sum_u a_u da_u).
template <typename acc_t>
inline void softmax_backward_step(const acc_t* a, acc_t* ds, int64_t tv) {
  vec_t<acc_t> dot[kVecs] = {};
  for (int64_t t = 0; t < tv; ++t) {
    for (int u = 0; u < kVecs; ++u) dot[u] += vload(a + t * kTile + u * kLanes) * vload(ds + t * kTile + u * kLanes);
  }
  for (int64_t t = 0; t < tv; ++t) {
    for (int u = 0; u < kVecs; ++u) {
      const int64_t i = t * kTile + u * kLanes;
      vstore(ds + i, vload(a + i) * (vload(ds + i) - dot[u]));
    }
  }
}

// dwv[c][t] += x[c] ds[t] + g[c] a[t], lane by lane, over the nv vectors of a tile; C4, tp multiples of kDwBlock.
template <typename acc_t>
void accumulate_word_grad(const acc_t* x, const acc_t* g, const acc_t* a, const acc_t* ds, int64_t C4, int64_t tp,
                          int64_t nv, acc_t* dwv) {
  using vec = vec_t<acc_t>;
  for (int64_t c0 = 0; c0 < C4; c0 += kDwBlock) {
    for (int64_t t0 = 0; t0 < tp; t0 += kDwBlock) {
      vec acc[kDwBlock][kDwBlock];
      for (int i = 0; i < kDwBlock; ++i)
        for (int j = 0; j < kDwBlock; ++j) acc[i][j] = vload(dwv + ((c0 + i) * tp + t0 + j) * kLanes);
      for (int64_t v = 0; v < nv; ++v) {
        const int64_t col = v * kLanes;
        vec dv[kDwBlock], av[kDwBlock];
        for (int j = 0; j < kDwBlock; ++j) {
          dv[j] = vload(ds + (t0 + j) * kTile + col);
          av[j] = vload(a + (t0 + j) * kTile + col);
        }
        for (int i = 0; i < kDwBlock; ++i) {
          const vec xv = vload(x + (c0 + i) * kTile + col), gv = vload(g + (c0 + i) * kTile + col);
          for (int j = 0; j < kDwBlock; ++j) {  // two statements: two fused multiply-adds
            acc[i][j] += xv * dv[j];
            acc[i][j] += gv * av[j];
          }
        }
      }
      for (int i = 0; i < kDwBlock; ++i)
        for (int j = 0; j < kDwBlock; ++j) vstore(dwv + ((c0 + i) * tp + t0 + j) * kLanes, acc[i][j]);
    }
  }
}

template <typename scalar_t>
struct Pointers {
  const scalar_t* h;         // (B, C, Q)
  const scalar_t* words;     // (B, C, T)
  const bool* mask;          // (B, T) or null
  const scalar_t* grad_ctx;  // (B, C, Q), backward
  const scalar_t* grad_w;    // (B, T, Q) or null, backward
  const scalar_t* saved_w;   // (B, T, Q) or null: the forward's weights, backward
  scalar_t* out;             // (B, C, Q): context (forward) or grad h (backward)
  scalar_t* weights;         // (B, T, Q) or null, forward
};

// Weights of sample ws.b for regions [q0, q0 + n): the held words' rows of the tile, masked words 0.
template <typename scalar_t, typename acc_t>
void write_weights(const Workspace<acc_t>& ws, const Geometry& geo, int64_t q0, int64_t n, scalar_t* weights) {
  int64_t j = 0;
  for (int64_t t = 0; t < geo.T; ++t) {
    scalar_t* row = weights + (ws.b * geo.T + t) * geo.Q + q0;
    if (j < ws.tv && ws.valid[j] == t) {
      unstage_rows(ws.p.get() + j * kTile, 1, n, row, 0);
      ++j;
    } else {
      std::fill(row, row + n, scalar_t(0));
    }
  }
}

template <typename scalar_t, typename acc_t>
void forward_tile(Workspace<acc_t>& ws, const Geometry& geo, const Pointers<scalar_t>& ptr, int64_t q0, int64_t n) {
  const int64_t b = ws.b, C = geo.C, Q = geo.Q, tv = ws.tv;
  scalar_t* ctx = ptr.out + b * C * Q + q0;
  if (tv == 0) {
    zero_rows(ctx, C, Q, n);
  } else {
    stage_rows(ptr.h + b * C * Q + q0, Q, C, n, ws.x.get());
    for (int64_t col = 0; col < n; col += kStep) {
      acc_t* p = ws.p.get() + col;
      project(ws.x.get() + col, C, ws.w.get(), tv, p);
      softmax_step(p, tv);
      combine(p, tv, ws.w.get(), geo.Cp, ws.out.get() + col);
    }
    unstage_rows(ws.out.get(), C, n, ctx, Q);
  }
  if (ptr.weights) write_weights(ws, geo, q0, n, ptr.weights);
}

// Grad h for regions [q0, q0 + n) of sample ws.b, and their share of the word gradient into ws.dwv.
template <typename scalar_t, typename acc_t>
void backward_tile(Workspace<acc_t>& ws, const Geometry& geo, const Pointers<scalar_t>& ptr, int64_t q0, int64_t n) {
  const int64_t b = ws.b, C = geo.C, Q = geo.Q, tv = ws.tv;
  scalar_t* grad_h = ptr.out + b * C * Q + q0;
  if (tv == 0) {
    zero_rows(grad_h, C, Q, n);
    return;
  }
  stage_rows(ptr.h + b * C * Q + q0, Q, C, n, ws.x.get());
  stage_rows(ptr.grad_ctx + b * C * Q + q0, Q, C, n, ws.g.get());
  if (ptr.saved_w) {
    for (int64_t j = 0; j < tv; ++j) {
      stage_rows(ptr.saved_w + (b * geo.T + ws.valid[j]) * Q + q0, 0, 1, n, ws.p.get() + j * kTile);
    }
  }
  const int64_t nv = round_up(n, kStep) / kLanes;
  for (int64_t col = 0; col < n; col += kStep) {
    acc_t* a = ws.p.get() + col;
    acc_t* ds = ws.ds.get() + col;
    if (!ptr.saved_w) {
      project(ws.x.get() + col, C, ws.w.get(), tv, a);
      softmax_step(a, tv);
    }
    project(ws.g.get() + col, C, ws.w.get(), tv, ds);  // da = dctx . w
    if (ptr.grad_w) {
      const int64_t m = std::min(kStep, n - col);
      for (int64_t j = 0; j < tv; ++j) {
        const scalar_t* gw = ptr.grad_w + (b * geo.T + ws.valid[j]) * Q + q0 + col;
        acc_t* d = ds + j * kTile;
        for (int64_t i = 0; i < m; ++i) d[i] += static_cast<acc_t>(gw[i]);
      }
    }
    softmax_backward_step(a, ds, tv);
    combine(ds, tv, ws.w.get(), geo.Cp, ws.out.get() + col);
  }
  unstage_rows(ws.out.get(), C, n, grad_h, Q);
  accumulate_word_grad(ws.x.get(), ws.g.get(), ws.p.get(), ws.ds.get(), round_up(C, kDwBlock), round_up(tv, kDwBlock),
                       nv, ws.dwv.get());
}

template <typename scalar_t>
void forward_kernel(const Geometry& geo, const Pointers<scalar_t>& ptr) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t ntiles = (geo.Q + kTile - 1) / kTile;
  at::parallel_for(0, geo.B * ntiles, 1, [&](int64_t begin, int64_t end) {
    Workspace<acc_t> ws(geo, /*backward=*/false);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t q0 = task % ntiles * kTile;
      ws.load_words(geo, ptr.words, ptr.mask, task / ntiles);
      forward_tile(ws, geo, ptr, q0, std::min(kTile, geo.Q - q0));
    }
  });
}

// grad h into ptr.out; the word gradient into grad_words (B, C, T).
template <typename scalar_t>
void backward_kernel(const Geometry& geo, const Pointers<scalar_t>& ptr, scalar_t* grad_words) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t nchunks = (geo.Q + kChunk - 1) / kChunk, per_sample = geo.C * geo.T;
  // One word-gradient slot per (sample, chunk): (B, nchunks, C, T), summed in chunk order afterwards.
  Buffer<acc_t> slots = zeros<acc_t>(geo.B * nchunks * per_sample);
  at::parallel_for(0, geo.B * nchunks, 1, [&](int64_t begin, int64_t end) {
    Workspace<acc_t> ws(geo, /*backward=*/true);
    for (int64_t task = begin; task < end; ++task) {
      ws.load_words(geo, ptr.words, ptr.mask, task / nchunks);
      const int64_t tp = round_up(ws.tv, kDwBlock);
      std::memset(ws.dwv.get(), 0, geo.Cp * tp * kLanes * sizeof(acc_t));
      const int64_t q_end = std::min(geo.Q, (task % nchunks + 1) * kChunk);
      for (int64_t q0 = task % nchunks * kChunk; q0 < q_end; q0 += kTile) {
        backward_tile(ws, geo, ptr, q0, std::min(kTile, q_end - q0));
      }
      acc_t* slot = slots.get() + task * per_sample;
      for (int64_t c = 0; c < geo.C; ++c) {
        for (int64_t j = 0; j < ws.tv; ++j)
          slot[c * geo.T + ws.valid[j]] = vsum<acc_t>(vload(ws.dwv.get() + (c * tp + j) * kLanes));
      }
    }
  });
  at::parallel_for(0, geo.B * per_sample, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const acc_t* s = slots.get() + (i / per_sample) * nchunks * per_sample + i % per_sample;
      acc_t acc = 0;
      for (int64_t k = 0; k < nchunks; ++k) acc += s[k * per_sample];
      grad_words[i] = static_cast<scalar_t>(acc);
    }
  });
}

void check_inputs(const char* op, const at::Tensor& h, const at::Tensor& words, const std::optional<at::Tensor>& mask) {
  TORCH_CHECK(h.dim() == 4, op, ": h must be (B, C, H, W), got ", h.sizes());
  TORCH_CHECK(words.dim() == 3 && words.size(0) == h.size(0) && words.size(1) == h.size(1), op,
              ": words must be (B, C, T) = (", h.size(0), ", ", h.size(1), ", T), got ", words.sizes());
  TORCH_CHECK(words.scalar_type() == h.scalar_type(), op, ": words dtype ", words.scalar_type(), " != h dtype ",
              h.scalar_type());
  if (mask.has_value()) {
    TORCH_CHECK(mask->scalar_type() == at::kBool, op, ": mask must be bool, got ", mask->scalar_type());
    TORCH_CHECK(mask->dim() == 2 && mask->size(0) == h.size(0) && mask->size(1) == words.size(2), op,
                ": mask must be (B, T) = (", h.size(0), ", ", words.size(2), "), got ", mask->sizes());
  }
}

const bool* mask_data(const at::Tensor& mask) {
  return mask.defined() ? mask.const_data_ptr<bool>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor> word_region_attention_cpu(const at::Tensor& h_in, const at::Tensor& words_in,
                                                             const std::optional<at::Tensor>& mask_in,
                                                             bool need_weights) {
  check_inputs("word_region_attention", h_in, words_in, mask_in);
  const Geometry geo = make_geometry(h_in, words_in);
  const at::Tensor h = h_in.contiguous(), words = words_in.contiguous();
  const at::Tensor mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
  at::Tensor ctx = at::empty(h.sizes(), h.options());
  at::Tensor weights =
      need_weights ? at::empty({geo.B, geo.T, h.size(2), h.size(3)}, h.options()) : at::empty({0}, h.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "word_region_attention_cpu", [&] {
    forward_kernel<scalar_t>(geo, {h.const_data_ptr<scalar_t>(), words.const_data_ptr<scalar_t>(), mask_data(mask),
                                   nullptr, nullptr, nullptr, ctx.mutable_data_ptr<scalar_t>(),
                                   need_weights ? weights.mutable_data_ptr<scalar_t>() : nullptr});
  });
  return {ctx, weights};
}

std::tuple<at::Tensor, at::Tensor> word_region_attention_backward_cpu(
    const at::Tensor& grad_ctx_in, const std::optional<at::Tensor>& grad_weights_in, const at::Tensor& h_in,
    const at::Tensor& words_in, const std::optional<at::Tensor>& mask_in, const std::optional<at::Tensor>& weights_in) {
  check_inputs("word_region_attention_backward", h_in, words_in, mask_in);
  const Geometry geo = make_geometry(h_in, words_in);
  TORCH_CHECK(grad_ctx_in.sizes() == h_in.sizes(), "word_region_attention_backward: grad_context must be ",
              h_in.sizes(), ", got ", grad_ctx_in.sizes());
  const std::vector<int64_t> weights_shape{geo.B, geo.T, h_in.size(2), h_in.size(3)};
  const bool has_grad_w = grad_weights_in.has_value() && grad_weights_in->numel() > 0;
  const bool has_saved_w = weights_in.has_value() && weights_in->numel() > 0;
  for (const auto& [name, t, given] : {std::make_tuple("grad_weights", &grad_weights_in, has_grad_w),
                                       std::make_tuple("weights", &weights_in, has_saved_w)}) {
    TORCH_CHECK(!given || (*t)->sizes() == at::IntArrayRef(weights_shape), "word_region_attention_backward: ", name,
                " must be ", at::IntArrayRef(weights_shape), ", got ", (*t)->sizes());
  }
  const at::Tensor h = h_in.contiguous(), words = words_in.contiguous();
  const at::Tensor mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
  const at::Tensor grad_ctx = grad_ctx_in.contiguous().to(h.scalar_type());
  const at::Tensor grad_w = has_grad_w ? grad_weights_in->contiguous().to(h.scalar_type()) : at::Tensor();
  const at::Tensor saved_w = has_saved_w ? weights_in->contiguous().to(h.scalar_type()) : at::Tensor();
  at::Tensor grad_h = at::empty(h.sizes(), h.options());
  at::Tensor grad_words = at::empty(words.sizes(), words.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "word_region_attention_backward_cpu", [&] {
    backward_kernel<scalar_t>(
        geo,
        {h.const_data_ptr<scalar_t>(), words.const_data_ptr<scalar_t>(), mask_data(mask),
         grad_ctx.const_data_ptr<scalar_t>(), has_grad_w ? grad_w.const_data_ptr<scalar_t>() : nullptr,
         has_saved_w ? saved_w.const_data_ptr<scalar_t>() : nullptr, grad_h.mutable_data_ptr<scalar_t>(), nullptr},
        grad_words.mutable_data_ptr<scalar_t>());
  });
  return {grad_h, grad_words};
}

}  // namespace

TORCH_LIBRARY_IMPL(attngan_fast, CPU, m) {
  m.impl("word_region_attention", &word_region_attention_cpu);
  m.impl("word_region_attention_backward", &word_region_attention_backward_cpu);
}

}  // namespace attngan_fast
