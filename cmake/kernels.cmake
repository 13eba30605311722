# Fused-loss kernels. Sets DISTILL_KERNEL_SOURCES (compiled into distill_core) and, when
# DISTILL_CUDA_KERNELS is ON, defines the raw-pointer CUDA library distill_cuda_kernels.
#
#   kd_loss_reference.cpp   scalar double-precision reference (what the kernels are tested against)
#   kd_loss_cpu.cpp         fused CPU kernel (AVX-512 / AVX2+FMA+F16C / scalar, picked at run time)
#   kd_loss_args.cpp        argument checks shared by both kernels; lives in distill_cuda_kernels when that
#                           exists, so that the CUDA library links against nothing but the CUDA runtime
#   kd_loss_cuda.cu         CUDA kernels (sm_90 by default: CMAKE_CUDA_ARCHITECTURES): the plan and the launchers
#                           of kd_loss_cuda_rows.cuh's kernel; kd_loss_cuda_common.cuh is shared with dev/cuda
#   kd_loss_cuda_absent.cpp the CUDA entry points of a build without CUDA (report "not compiled")
option(DISTILL_PTXAS_VERBOSE "Print ptxas register / shared memory / spill report for the CUDA kernels" OFF)

set(DISTILL_KERNEL_SOURCES
  ${CMAKE_SOURCE_DIR}/src/kernels/kd_loss_reference.cpp
  ${CMAKE_SOURCE_DIR}/src/kernels/kd_loss_cpu.cpp
)
# The AVX2 / AVX-512 code is compiled under per-function target attributes (no -mavx flags), so the file
# builds with the project's flags and runs on any x86-64. GCC 12 reports false (maybe-)uninitialized
# warnings inside avx512fintrin.h, from its _mm512_undefined_* placeholders (GCC bug 105593).
set(DISTILL_AVX512_WARNING_FLAGS "")
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  set(DISTILL_AVX512_WARNING_FLAGS -Wno-uninitialized -Wno-maybe-uninitialized)
  set_source_files_properties(${CMAKE_SOURCE_DIR}/src/kernels/kd_loss_cpu.cpp
    PROPERTIES COMPILE_OPTIONS "${DISTILL_AVX512_WARNING_FLAGS}")
endif()

if(DISTILL_CUDA_KERNELS)
  add_library(distill_cuda_kernels STATIC
    ${CMAKE_SOURCE_DIR}/src/kernels/kd_loss_cuda.cu
    ${CMAKE_SOURCE_DIR}/src/kernels/kd_loss_args.cpp
  )
  target_include_directories(distill_cuda_kernels PUBLIC ${CMAKE_SOURCE_DIR}/include)
  set_target_properties(distill_cuda_kernels PROPERTIES
    CUDA_STANDARD 17
    CUDA_STANDARD_REQUIRED ON
    CXX_STANDARD 17
    POSITION_INDEPENDENT_CODE ON)
  if(DISTILL_PTXAS_VERBOSE)
    target_compile_options(distill_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-v>)
  endif()
  target_link_libraries(distill_cuda_kernels PUBLIC CUDA::cudart)
else()
  list(APPEND DISTILL_KERNEL_SOURCES
    ${CMAKE_SOURCE_DIR}/src/kernels/kd_loss_args.cpp
    ${CMAKE_SOURCE_DIR}/src/kernels/kd_loss_cuda_absent.cpp
  )
endif()

# dev/cuda (DISTILL_CUDA_DEV, default OFF): the experimental CUDA variants that production does not ship, each
# a standalone program that checks itself against the CPU reference and times itself beside the production
# kernel (dev/cuda/README.md). Built into <build>/dev/cuda/ (target dev_cuda); scripts/gpu-check.sh turns them
# on. Their CUDA emulator builds are in kernel_tests.cmake.
set(DISTILL_DEV_CUDA_PROGRAMS kd_loss_block_per_row kd_loss_cluster_per_row kd_loss_cluster_persistent)
if(DISTILL_CUDA_DEV AND DISTILL_CUDA_KERNELS)
  add_library(distill_dev_cuda_reference STATIC ${CMAKE_SOURCE_DIR}/src/kernels/kd_loss_reference.cpp)
  target_include_directories(distill_dev_cuda_reference PUBLIC ${CMAKE_SOURCE_DIR}/include)
  foreach(program ${DISTILL_DEV_CUDA_PROGRAMS})
    add_executable(${program} ${CMAKE_SOURCE_DIR}/dev/cuda/${program}.cu)
    target_include_directories(${program} PRIVATE ${CMAKE_SOURCE_DIR})
    target_link_libraries(${program} PRIVATE distill_cuda_kernels distill_dev_cuda_reference)
    set_target_properties(${program} PROPERTIES
      CUDA_STANDARD 17
      CUDA_STANDARD_REQUIRED ON
      RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/dev/cuda)
    if(DISTILL_PTXAS_VERBOSE)
      target_compile_options(${program} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-v>)
    endif()
  endforeach()
  add_custom_target(dev_cuda DEPENDS ${DISTILL_DEV_CUDA_PROGRAMS})
elseif(DISTILL_CUDA_DEV)
  message(STATUS "distill: DISTILL_CUDA_DEV is ON but there is no nvcc: only the CUDA emulator builds of dev/cuda")
endif()
