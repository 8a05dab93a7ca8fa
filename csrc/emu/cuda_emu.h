// A CPU emulation of the CUDA C++ the kernels of csrc/cuda/ use, for tests without a GPU.
//
// Only the test build includes this header (csrc/emu/*.cpp, ATTNGAN_CUDA_EMU; see
// docs/cuda_emulation.md): the .cu sources compile unchanged as host C++ against it, launching
// through attngan_fast::cuda::launch (cuda/launch.h) instead of <<<>>>.
//
// Model. A launch runs the grid's blocks one after the other, in blockIdx order (x fastest), on
// the calling OS thread. A block's threads are fibers (ucontext), one per CUDA thread, each with
// its own stack: a fiber runs until it reaches __syncthreads() or returns, then the next fiber
// runs. A barrier phase ends when every thread of the block waits at a __syncthreads() or has
// returned; then the waiting threads resume. The fibers of a phase run in thread order
// (threadIdx.x fastest) on even (block, phase) counts and in the reverse order on odd ones, so a
// read of shared memory that another thread of the same phase writes (a missing __syncthreads())
// sees the stale value for one of the two orders and shows in the results.
//
//   threadIdx / blockIdx / blockDim / gridDim   per fiber (uint3 / dim3), set before each resume
//   __syncthreads()          a barrier of the block's threads; an error (std::runtime_error from
//                            the launch) if some threads wait while others have returned, or if
//                            threads wait at different __syncthreads() call sites
//   __shared__               `static thread_local`: one copy per kernel instantiation and OS
//                            thread, shared by the block running on it (blocks run one at a time).
//                            Not zeroed between blocks (like CUDA, its contents start undefined:
//                            a kernel that reads before writing sees the previous block's data)
//   atomicAdd(float/double)  a plain read-modify-write (no other fiber runs in between)
//   launch                   checks the launch configuration like the CUDA runtime (block at most
//                            1024 threads, x/y <= 1024, z <= 64; grid y, z <= 65535, x < 2^31)
//                            and throws on a bad one (CUDA: "invalid configuration argument")
//   Stream, DeviceGuard      stand-ins (the launch is synchronous)
//   kMultiprocessors         the "SM count" reduction grids are sized with (small: 2, so the
//                            reductions loop over several tiles per block with few blocks)
//
// What it does NOT model (the kernels of csrc/cuda/ must not rely on any of it; checked: they use
// no warp intrinsics, no __threadfence, no volatile / flag-based inter-block communication, no
// dynamic shared memory, and each block's results depend only on its own threads):
//  - warp-synchronous execution: threads of a warp do not run in lockstep here, and __shfl_*,
//    __ballot_sync, __syncwarp, warp-level reductions without barriers are not provided;
//  - memory ordering and data races: fibers interleave only at __syncthreads(), so a race between
//    two threads of one phase that write the same word, or that read a word another writes,
//    resolves to one fixed order (two orders across blocks/phases, see above), never torn or
//    reordered; __threadfence, memory scopes and the relaxed ordering of global memory are absent;
//  - concurrency between blocks: blocks never run at the same time, so inter-block
//    communication (spin-waits on flags, cooperative groups' grid sync) deadlocks or is wrong;
//  - resource limits: registers, the 48 KiB static shared memory limit, occupancy, timing;
//  - device numerics: expf/exp are the host's libm (results may differ in the last ulp from the
//    device's), no fused multiply-add contraction guarantees, no fast-math intrinsics;
//  - __launch_bounds__, dynamic shared memory (extern __shared__), streams' asynchrony, errors
//    that CUDA reports asynchronously (an out-of-bounds access is undefined behaviour here too).
#pragma once

#include <sys/mman.h>
#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

namespace cuda_emu {

constexpr int kMultiprocessors = 2;
constexpr std::size_t kStackBytes = 128 * 1024;

struct Stream {};

struct DeviceGuard {
  template <typename D>
  explicit DeviceGuard(const D&) {}
};

// The CUDA built-in variables of the running fiber.
struct Builtins {
  uint3 threadIdx{0, 0, 0}, blockIdx{0, 0, 0};
  dim3 blockDim, gridDim;
};

namespace detail {

// One fiber per thread of the block; the stacks are kept between launches (per OS thread).
struct Fiber {
  ucontext_t context;
  void* stack = nullptr;
  bool done = false;
  int waiting_at = 0;  // the __syncthreads() call site (line) it waits at, 0 while running
};

class Scheduler {
 public:
  Scheduler() = default;
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;
  ~Scheduler() {
    for (Fiber& f : fibers_) munmap(f.stack, kStackBytes + kGuardBytes);
  }

  Builtins builtins;

  // Runs body once per thread of every block of the grid.
  void run_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
    const unsigned threads = block.x * block.y * block.z;
    reserve(threads);
    struct Reset {  // also when a block throws
      Scheduler* s;
      ~Reset() { s->body_ = nullptr, s->current_ = -1; }
    } reset{this};
    body_ = &body;
    builtins.gridDim = grid;
    builtins.blockDim = block;
    std::uint64_t block_count = 0;
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx, ++block_count) {
          builtins.blockIdx = {bx, by, bz};
          run_block(block, threads, block_count);
        }
  }

  // Called by a fiber at __syncthreads(): back to the scheduler until every thread is there.
  void barrier(int site) {
    Fiber& f = fibers_[current_];
    f.waiting_at = site;
    swapcontext(&f.context, &scheduler_context_);
    f.waiting_at = 0;
  }

  bool in_kernel() const { return body_ != nullptr && current_ >= 0; }

 private:
  static constexpr std::size_t kGuardBytes = 4096;  // an inaccessible page below each stack

  void reserve(unsigned threads) {
    while (fibers_.size() < threads) {
      Fiber f;
      f.stack = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (f.stack == MAP_FAILED) throw std::runtime_error("cuda_emu: cannot allocate a fiber stack");
      mprotect(f.stack, kGuardBytes, PROT_NONE);
      fibers_.push_back(f);
    }
    if (!have_template_) {
      getcontext(&template_);
      have_template_ = true;
    }
  }

  static void entry();

  void run_block(dim3 block, unsigned threads, std::uint64_t block_count) {
    for (unsigned i = 0; i < threads; ++i) {
      Fiber& f = fibers_[i];
      f.context = template_;
      f.context.uc_stack.ss_sp = static_cast<char*>(f.stack) + kGuardBytes;
      f.context.uc_stack.ss_size = kStackBytes;
      f.context.uc_link = &scheduler_context_;
      makecontext(&f.context, &Scheduler::entry, 0);
      f.done = false;
      f.waiting_at = 0;
    }
    for (std::uint64_t phase = 0;; ++phase) {
      const bool reverse = (block_count + phase) % 2 == 1;
      for (unsigned k = 0; k < threads; ++k) {
        const unsigned i = reverse ? threads - 1 - k : k;
        Fiber& f = fibers_[i];
        if (f.done) continue;
        builtins.threadIdx = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
        current_ = static_cast<int>(i);
        swapcontext(&scheduler_context_, &f.context);
      }
      current_ = -1;
      unsigned done = 0, waiting = 0;
      int site = 0;
      bool same_site = true;
      for (unsigned i = 0; i < threads; ++i) {
        if (fibers_[i].done) {
          ++done;
        } else {
          ++waiting;
          if (site == 0) site = fibers_[i].waiting_at;
          same_site = same_site && fibers_[i].waiting_at == site;
        }
      }
      if (waiting == 0) return;
      const std::string where = "block (" + std::to_string(builtins.blockIdx.x) + ", " +
                                std::to_string(builtins.blockIdx.y) + ", " + std::to_string(builtins.blockIdx.z) + ")";
      if (done > 0) {
        throw std::runtime_error("cuda_emu: " + where + ": " + std::to_string(waiting) +
                                 " threads wait at the __syncthreads() of line " + std::to_string(site) + " but " +
                                 std::to_string(done) + " have returned (a barrier in divergent code)");
      }
      if (!same_site) {
        throw std::runtime_error("cuda_emu: " + where + ": threads wait at different __syncthreads() call sites");
      }
    }
  }

  std::vector<Fiber> fibers_;
  ucontext_t scheduler_context_{};
  ucontext_t template_{};
  bool have_template_ = false;
  const std::function<void()>* body_ = nullptr;
  int current_ = -1;
};

inline Scheduler& scheduler() {
  static thread_local Scheduler s;
  return s;
}

inline void Scheduler::entry() {
  Scheduler& s = scheduler();
  (*s.body_)();
  s.fibers_[s.current_].done = true;
}  // returns to uc_link: the scheduler

}  // namespace detail

inline void syncthreads(int site) {
  detail::Scheduler& s = detail::scheduler();
  if (!s.in_kernel()) throw std::logic_error("cuda_emu: __syncthreads() outside a kernel");
  s.barrier(site);
}

inline void check_launch(dim3 grid, dim3 block) {
  const std::uint64_t threads = std::uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
      grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
    throw std::runtime_error("cuda_emu: invalid configuration argument: grid (" + std::to_string(grid.x) + ", " +
                             std::to_string(grid.y) + ", " + std::to_string(grid.z) + "), block (" +
                             std::to_string(block.x) + ", " + std::to_string(block.y) + ", " + std::to_string(block.z) +
                             ")");
  }
}

// kernel<<<grid, block, 0, stream>>>(args...), run to completion before returning.
template <typename... Params, typename... Args>
void launch_grid(void (*kernel)(Params...), dim3 grid, dim3 block, Stream, Args&&... args) {
  check_launch(grid, block);
  // The parameters as the kernel receives them (by value, converted once, as CUDA copies them).
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  const std::function<void()> body = [&] { std::apply(kernel, params); };
  detail::scheduler().run_grid(grid, block, body);
}

inline float atomicAdd(float* address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}

inline double atomicAdd(double* address, double value) {
  const double old = *address;
  *address = old + value;
  return old;
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::detail::scheduler().builtins.threadIdx)
#define blockIdx (::cuda_emu::detail::scheduler().builtins.blockIdx)
#define blockDim (::cuda_emu::detail::scheduler().builtins.blockDim)
#define gridDim (::cuda_emu::detail::scheduler().builtins.gridDim)
#define __syncthreads() ::cuda_emu::syncthreads(__LINE__)
using cuda_emu::atomicAdd;
