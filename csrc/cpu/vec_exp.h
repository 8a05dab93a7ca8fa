// exp for float in a form GCC vectorizes inside `omp simd` / plain loops (glibc's expf has no SIMD
// variant without -ffast-math, and std::floor / std::min block vectorization).
#pragma once

#include <cmath>
#include <cstdint>

namespace attngan_fast {

// Cody-Waite range reduction x = n ln2 + r, |r| <= ln2 / 2, with n rounded by the 1.5 * 2^23
// trick; e^r by the degree-6 minimax polynomial of Cephes' expf; 2^n through the exponent bits.
// Relative error <= 2 ulp; 0 below the float range (x < -87.34), inf clamp at 88; NaN stays NaN.
inline float vexp(float x) {
  const float xc = x > 88.0f ? 88.0f : x;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: (v + kRound) - kRound rounds v to an integer
  const float n = (xc * 1.44269504088896341f + kRound) - kRound;
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
  return x < -87.3365447505f ? 0.0f : p * scale;
}

// Double (the gradcheck path): the library exp.
inline double vexp(double x) {
  return std::exp(x);
}

}  // namespace attngan_fast
