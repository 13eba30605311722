# Tests of the fused-loss kernels (included from the top-level CMakeLists inside DISTILL_BUILD_TESTS).
distill_add_test(tests/kernels/kd_loss_cpu_test.cpp LABELS kernels)
# It compiles the AVX-512 exp / log wrappers: the same GCC 12 false positives as kd_loss_cpu.cpp.
target_compile_options(kd_loss_cpu_test PRIVATE ${DISTILL_AVX512_WARNING_FLAGS})

# The CUDA test builds wherever the kernels do; without a GPU each test prints "SKIPPED: no CUDA device",
# which ctest reports as skipped. (Registered by hand: distill_add_test has no way to pass the property.)
if(DISTILL_CUDA_KERNELS)
  add_executable(kd_loss_cuda_test tests/kernels/kd_loss_cuda_test.cpp)
  target_link_libraries(kd_loss_cuda_test PRIVATE distill_test_main CUDA::cudart)
  if(DISTILL_PCH)
    target_precompile_headers(kd_loss_cuda_test REUSE_FROM distill_core)
  endif()
  catch_discover_tests(kd_loss_cuda_test
    PROPERTIES LABELS "kernels" SKIP_REGULAR_EXPRESSION "SKIPPED: no CUDA device"
    DISCOVERY_TIMEOUT 60)
endif()
