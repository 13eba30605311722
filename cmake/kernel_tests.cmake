# Tests of the fused-loss kernels (included from the top-level CMakeLists inside DISTILL_BUILD_TESTS).
distill_add_test(tests/kernels/kd_loss_cpu_test.cpp LABELS kernels)
# It compiles the AVX-512 exp / log wrappers: the same GCC 12 false positives as kd_loss_cpu.cpp.
target_compile_options(kd_loss_cpu_test PRIVATE ${DISTILL_AVX512_WARNING_FLAGS})

# The CUDA kernel tests (host code on the CUDA runtime API), each built twice:
#
# * against the real kernels wherever nvcc exists. Without a GPU each test prints "SKIPPED: no CUDA device",
#   which ctest reports as skipped.
# * against the CUDA emulator (tests/cuda_emulator: every GPU thread a fiber; its header says what it checks
#   and what only a GPU can), as "<test> (CUDA emulator)". It builds and runs everywhere, so CI, which has no
#   GPU, runs every CUDA kernel on every push. The kernel sources are compiled as C++ into
#   distill_cuda_emulated together with the host pieces they are tested against (not through distill_core,
#   which may hold the real CUDA kernels or the "not compiled" stubs under the same names). Not in sanitizer
#   builds: they cannot follow the fibers' stack switches. [large] shapes are GPU-only: the emulator would
#   need hours and tens of GiB for them.
option(DISTILL_CUDA_EMULATOR_TESTS "Run the CUDA kernel tests on the CPU through tests/cuda_emulator" ON)
set(DISTILL_EMULATED_TESTS OFF)
if(DISTILL_CUDA_EMULATOR_TESTS AND NOT DISTILL_SANITIZE)
  set(DISTILL_EMULATED_TESTS ON)
  add_library(distill_cuda_emulated STATIC
    tests/cuda_emulator/cuda_emulator.cpp
    tests/cuda_emulator/kd_loss_cuda_emulated.cpp
    tests/cuda_emulator/grad_scale_emulated.cpp
    src/kernels/kd_loss_reference.cpp
    src/kernels/kd_loss_cpu.cpp
    src/kernels/kd_loss_args.cpp
  )
  # The shims first, so that <cuda_runtime.h> and friends are the emulator's even where CUDA is installed.
  target_include_directories(distill_cuda_emulated BEFORE PUBLIC tests/cuda_emulator/include)
  target_include_directories(distill_cuda_emulated PUBLIC include)
  target_compile_definitions(distill_cuda_emulated PUBLIC DISTILL_CUDA_EMULATOR=1)
  target_compile_options(distill_cuda_emulated PRIVATE -Wall -Wextra -Wno-unused-parameter
    ${DISTILL_AVX512_WARNING_FLAGS})
  # The kernels' `#pragma unroll` is for nvcc.
  set_source_files_properties(tests/cuda_emulator/kd_loss_cuda_emulated.cpp tests/cuda_emulator/grad_scale_emulated.cpp
    PROPERTIES COMPILE_OPTIONS -Wno-unknown-pragmas)
  # OpenMP for kd_loss_cpu.cpp's at::parallel_for; PUBLIC as for distill_core, so that the emulated tests'
  # translation units see ATen's headers as the library does.
  target_link_libraries(distill_cuda_emulated PUBLIC ${TORCH_LIBRARIES} Threads::Threads OpenMP::OpenMP_CXX)
endif()

function(distill_add_cuda_test file)
  get_filename_component(name ${file} NAME_WE)
  if(DISTILL_CUDA_KERNELS)
    add_executable(${name} ${file})
    target_link_libraries(${name} PRIVATE distill_test_main CUDA::cudart)
    if(DISTILL_PCH)
      target_precompile_headers(${name} REUSE_FROM distill_core)
    endif()
    distill_discover_tests(${name} LABELS kernels PROPERTIES SKIP_REGULAR_EXPRESSION "SKIPPED: no CUDA device")
  endif()
  if(DISTILL_EMULATED_TESTS)
    string(REPLACE "_cuda_test" "_cuda_emulated_test" emulated ${name})
    add_executable(${emulated} ${file} tests/test_main.cpp)
    target_compile_options(${emulated} PRIVATE -Wall -Wextra -Wno-unused-parameter)
    target_link_libraries(${emulated} PRIVATE distill_cuda_emulated Catch2::Catch2)
    distill_discover_tests(${emulated} LABELS kernels emulator TEST_SPEC "~[large]" TEST_SUFFIX " (CUDA emulator)")
  endif()
endfunction()

distill_add_cuda_test(tests/kernels/kd_loss_cuda_test.cpp)
distill_add_cuda_test(tests/kernels/grad_scale_cuda_test.cpp)

# dev/cuda's programs on the CUDA emulator (DISTILL_CUDA_DEV): each one's validation grid, every setting
# against the reference, as a test labelled `dev` only (`ctest -L emulator` stays the production kernels';
# `ctest -L dev` runs these). dev/cuda/emulated.cpp compiles the program's own source as C++. Every setting of
# the cluster programs would take ~6 minutes each here: their automatic cluster and the largest one instead.
if(DISTILL_CUDA_DEV AND DISTILL_EMULATED_TESTS)
  set(settings_kd_loss_cluster_per_row cluster=auto cluster=8)
  set(settings_kd_loss_cluster_persistent cluster=auto cluster=8)
  foreach(program ${DISTILL_DEV_CUDA_PROGRAMS})
    add_executable(${program}_emulated dev/cuda/emulated.cpp)
    target_compile_definitions(${program}_emulated PRIVATE DISTILL_DEV_CUDA_PROGRAM="dev/cuda/${program}.cu")
    target_include_directories(${program}_emulated PRIVATE ${CMAKE_SOURCE_DIR})
    target_compile_options(${program}_emulated PRIVATE -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas)
    target_link_libraries(${program}_emulated PRIVATE distill_cuda_emulated)
    set_target_properties(${program}_emulated PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/dev/cuda)
    add_test(NAME "dev/cuda ${program} (CUDA emulator)" COMMAND ${program}_emulated --validate-only ${settings_${program}})
    set_tests_properties("dev/cuda ${program} (CUDA emulator)" PROPERTIES LABELS dev)
  endforeach()
endif()
