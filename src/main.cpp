// The distill executable: parse, run, and turn any failure into one "error: ..." line and an exit code.
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "distill/cli/cli.h"
#include "distill/error.h"

int main(int argc, char** argv) {
  // glibc serves blocks above its mmap threshold (128 KiB, rising to the largest block freed) with fresh
  // mappings and unmaps them on free, so each training step's activations came back as new pages: page
  // faults and kernel zeroing took a third of a small language model's step, varying with the machine's
  // memory pressure (docs/benchmarks.md: 0.6x to 1.1x PyTorch's throughput on the demo sizes). Up to 32 MiB
  // from the heap, and freed memory kept for the next step. GLIBC_TUNABLES, when set, decides instead.
  if (!std::getenv("GLIBC_TUNABLES")) {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
  }
  try {
    return distill::run_cli(argc, argv);
  } catch (const distill::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return static_cast<int>(distill::ExitCode::error);
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::fprintf(stderr, "error: internal error (please report it): %s\n", what.substr(0, what.find('\n')).c_str());
    return static_cast<int>(distill::ExitCode::internal);
  }
}
