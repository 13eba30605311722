// The collectives a data-parallel run needs, behind one small interface of ours, so that the trainer never
// sees c10d: its C++ API differs between Debian's LibTorch 1.13 and LibTorch 2.x, and only
// src/dist/c10d_comm.cpp is compiled against it. The implementation is PyTorch's own engine: a c10d TCPStore
// for the rendezvous and a Gloo (CPU) process group; no home-made transport.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "distill/dist/launch.h"

namespace at {
class Tensor;
}

namespace distill::dist {

enum class ReduceOp { sum, max };

struct CommOptions {
  std::string backend = "auto";  // auto | gloo | nccl
  double timeout_s = 300;        // a collective (or the rendezvous) not done by then is an error on every rank
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t world_size() const = 0;
  virtual std::string describe() const = 0;  // "gloo, 2 ranks, rendezvous 127.0.0.1:29500"
  // In place on every rank, for tensors on the backend's device. A rank that died or stopped answering makes
  // this throw distill::Error within the timeout.
  virtual void all_reduce(at::Tensor& t, ReduceOp op) = 0;
  virtual void broadcast(at::Tensor& t, int64_t root) = 0;
  virtual void barrier() = 0;
};

// The process-group backends this build can use: "gloo", or "" when its LibTorch lacks c10d's Gloo headers
// (a pip wheel's LibTorch ships none), where a data-parallel launch is refused with a clear error.
std::string available_backends();

// Joins the job `launch` describes (launch.distributed() must hold). Errors (no rendezvous within the timeout,
// an unknown backend, NCCL without CUDA) are distill::Error naming the key or variable.
std::unique_ptr<Communicator> connect(const Launch& launch, const CommOptions& options);

}  // namespace distill::dist
