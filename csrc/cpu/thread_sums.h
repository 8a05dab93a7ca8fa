// Per-thread double accumulators for the CPU kernels' reductions (BatchNorm statistics, weight and
// bias gradients): each ATen thread adds into its own arrays, total() sums the threads in a fixed
// order, so a result does not depend on the scheduling.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>
#include <vector>

namespace attngan_fast {

// `count` arrays of `width` values per thread; mine(k) is the calling thread's k-th array.
struct ThreadSums {
  int64_t width, count, threads;
  std::vector<double> data;
  ThreadSums(int64_t width_, int64_t count_)
      : width(width_),
        count(count_),
        threads(at::get_num_threads()),
        data(static_cast<size_t>(threads * width_ * count_), 0.0) {}
  double* mine(int64_t k) { return data.data() + (at::get_thread_num() * count + k) * width; }
  // adds a task's partial sums (count == 2: arrays of width values) into the calling thread's arrays
  void add(const double* first, const double* second) {
    double* a = mine(0);
    double* b = mine(1);
    for (int64_t c = 0; c < width; ++c) a[c] += first[c], b[c] += second[c];
  }
  double total(int64_t k, int64_t c) const {
    double s = 0;
    for (int64_t t = 0; t < threads; ++t) s += data[(t * count + k) * width + c];
    return s;
  }
};

}  // namespace attngan_fast
