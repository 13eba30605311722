# Tests of the fused-loss kernels (included from the top-level CMakeLists inside DISTILL_BUILD_TESTS).
distill_add_test(tests/kernels/kd_loss_cpu_test.cpp LABELS kernels)
# It compiles the AVX-512 exp / log wrappers: the same GCC 12 false positives as kd_loss_cpu.cpp.
target_compile_options(kd_loss_cpu_test PRIVATE ${DISTILL_AVX512_WARNING_FLAGS})

# The CUDA test builds wherever the kernels do; without a GPU each test prints "SKIPPED: no CUDA device",
# which ctest reports as skipped. (Not distill_add_test: it links the CUDA runtime and needs the skip property.)
if(DISTILL_CUDA_KERNELS)
  add_executable(kd_loss_cuda_test tests/kernels/kd_loss_cuda_test.cpp)
  target_link_libraries(kd_loss_cuda_test PRIVATE distill_test_main CUDA::cudart)
  if(DISTILL_PCH)
    target_precompile_headers(kd_loss_cuda_test REUSE_FROM distill_core)
  endif()
  distill_discover_tests(kd_loss_cuda_test LABELS kernels
    PROPERTIES SKIP_REGULAR_EXPRESSION "SKIPPED: no CUDA device")
endif()

# The same CUDA test on the CPU, through the CUDA emulator (tests/cuda_emulator: every GPU thread a fiber; its
# header says what it checks and what only a GPU can). It builds and runs everywhere, so CI, which has no GPU,
# runs every CUDA kernel variant on every push. The kernel source is compiled as C++ together with the host
# pieces it is tested against (not through distill_core, which may hold the real CUDA kernels or the "not
# compiled" stubs under the same names). Not in sanitizer builds: they cannot follow the fibers' stack switches.
# The [large] shapes are GPU-only: the emulator would need hours and tens of GiB for them.
option(DISTILL_CUDA_EMULATOR_TESTS "Run the CUDA kernel tests on the CPU through tests/cuda_emulator" ON)
if(DISTILL_CUDA_EMULATOR_TESTS AND NOT DISTILL_SANITIZE)
  add_executable(kd_loss_cuda_emulated_test
    tests/kernels/kd_loss_cuda_test.cpp
    tests/cuda_emulator/kd_loss_cuda_emulated.cpp
    tests/cuda_emulator/cuda_emulator.cpp
    tests/test_main.cpp
    src/kernels/kd_loss_reference.cpp
    src/kernels/kd_loss_cpu.cpp
    src/kernels/kd_loss_args.cpp
  )
  # The shims first, so that <cuda_runtime.h> and friends are the emulator's even where CUDA is installed.
  target_include_directories(kd_loss_cuda_emulated_test BEFORE PRIVATE tests/cuda_emulator/include)
  target_include_directories(kd_loss_cuda_emulated_test PRIVATE include)
  target_compile_definitions(kd_loss_cuda_emulated_test PRIVATE DISTILL_CUDA_EMULATOR=1)
  target_compile_options(kd_loss_cuda_emulated_test PRIVATE -Wall -Wextra -Wno-unused-parameter
    ${DISTILL_AVX512_WARNING_FLAGS})
  # The kernels' `#pragma unroll` is for nvcc.
  set_source_files_properties(tests/cuda_emulator/kd_loss_cuda_emulated.cpp PROPERTIES COMPILE_OPTIONS -Wno-unknown-pragmas)
  target_link_libraries(kd_loss_cuda_emulated_test PRIVATE Catch2::Catch2 ${TORCH_LIBRARIES} Threads::Threads)
  distill_discover_tests(kd_loss_cuda_emulated_test LABELS kernels emulator
    TEST_SPEC "~[large]" TEST_SUFFIX " (CUDA emulator)")
endif()
