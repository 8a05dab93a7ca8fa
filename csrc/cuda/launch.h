// The CUDA runtime as the launchers of csrc/cuda/ use it: the real one (nvcc), or, with
// ATTNGAN_CUDA_EMU (the test build, csrc/emu/), the CPU emulation of emu/cuda_emu.h. Kernels
// launch through attngan_fast::cuda::launch instead of <<<>>>, so that the same source compiles
// both ways; ATTNGAN_CUDA_LIBRARY / ATTNGAN_CUDA_KEY name where the ops register.
#pragma once

#ifdef ATTNGAN_CUDA_EMU
#include "emu/cuda_emu.h"
#define ATTNGAN_CUDA_LIBRARY attngan_fast_emu
#define ATTNGAN_CUDA_KEY CPU
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define ATTNGAN_CUDA_LIBRARY attngan_fast
#define ATTNGAN_CUDA_KEY CUDA
#endif

#include <utility>

namespace attngan_fast {
namespace cuda {

#ifdef ATTNGAN_CUDA_EMU
using Stream = ::cuda_emu::Stream;
using DeviceGuard = ::cuda_emu::DeviceGuard;
inline Stream current_stream() {
  return {};
}
inline int multiprocessor_count() {
  return ::cuda_emu::kMultiprocessors;
}
#else
using Stream = c10::cuda::CUDAStream;
using DeviceGuard = c10::cuda::CUDAGuard;
inline Stream current_stream() {
  return c10::cuda::getCurrentCUDAStream();
}
inline int multiprocessor_count() {
  int device = 0, sms = 1;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}
#endif

// kernel<<<grid, block, 0, stream>>>(args...) and the launch check.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Stream stream, Args&&... args) {
#ifdef ATTNGAN_CUDA_EMU
  ::cuda_emu::launch_grid(kernel, grid, block, stream, std::forward<Args>(args)...);
#else
  // a .h is formatted as C++, which would split the CUDA launch brackets
  // clang-format off
  kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
  // clang-format on
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

}  // namespace cuda
}  // namespace attngan_fast
