// Communicator over PyTorch's c10d (include/distill/dist/comm.h): the rendezvous through a TCPStore (rank 0
// serves it, or torchrun's agent does, keys then under /worker/attempt_<restart>), a Gloo process group for
// the collectives. The only file that includes c10d's headers.
#include <torch/torch.h>

// c10d's Gloo process group needs Gloo's headers (Debian: libgloo-dev) and USE_C10D_GLOO, which LibTorch
// defines only when building itself. A LibTorch without them builds a distill that runs single-process and
// refuses a data-parallel launch with a clear error.
#if __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>) && __has_include(<gloo/algorithm.h>)
#define DISTILL_HAVE_GLOO 1
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

#include <chrono>
#include <cstdlib>

#include "distill/dist/comm.h"
#include "distill/error.h"

namespace distill::dist {

#ifdef DISTILL_HAVE_GLOO
namespace {

std::chrono::milliseconds millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(const Launch& launch, const CommOptions& o) : launch_(launch), timeout_s_(o.timeout_s) {
    const std::string where = launch.master_addr + ":" + std::to_string(launch.master_port);
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(launch.master_port);
    so.isServer = !launch.agent_store && launch.rank == 0;
    so.numWorkers = launch.agent_store ? c10::nullopt : c10::optional<std::size_t>(static_cast<size_t>(launch.world_size));
    so.waitWorkers = !launch.agent_store;
    so.timeout = millis(o.timeout_s);
    c10::intrusive_ptr<c10d::Store> store;
    try {
      store = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, so);
      if (launch.agent_store)
        store = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(launch.restart_count), store);
      // One process group per job: a fresh prefix keeps a restarted job's keys apart from the last one's.
      store = c10::make_intrusive<c10d::PrefixStore>("distill", store);
    } catch (const std::exception& e) {
      throw Error("dist: rank " + std::to_string(launch.rank) + " could not meet the other ranks at " + where +
                  " within dist.timeout_s = " + std::to_string(static_cast<int64_t>(o.timeout_s)) + " s (" +
                  first_line(e.what()) + "); check MASTER_ADDR/MASTER_PORT, that every rank was started, and that "
                  "the port is free");
    }
    auto options = c10d::ProcessGroupGloo::Options::create(millis(o.timeout_s));
    const bool loopback = launch.master_addr == "127.0.0.1" || launch.master_addr == "localhost";
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (loopback)
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    try {
      pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(launch.rank),
                                                       static_cast<int>(launch.world_size), options);
    } catch (const std::exception& e) {
      throw Error("dist: rank " + std::to_string(launch.rank) + " could not connect the Gloo process group through " +
                  where + " (" + first_line(e.what()) + "); if the hosts have several networks, set GLOO_SOCKET_IFNAME");
    }
    describe_ = "gloo, " + std::to_string(launch.world_size) + " ranks, rendezvous " + where +
                (launch.agent_store ? " (torchrun's agent store)" : "");
  }

  int64_t rank() const override { return launch_.rank; }
  int64_t world_size() const override { return launch_.world_size; }
  std::string describe() const override { return describe_; }

  void all_reduce(at::Tensor& t, ReduceOp op) override {
    std::vector<at::Tensor> tensors{t};
    c10d::AllreduceOptions ao;
    ao.reduceOp = op == ReduceOp::max ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
    wait([&] { return pg_->allreduce(tensors, ao); }, "all-reduce");
  }

  void broadcast(at::Tensor& t, int64_t root) override {
    std::vector<at::Tensor> tensors{t};
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    wait([&] { return pg_->broadcast(tensors, bo); }, "broadcast");
  }

  void barrier() override {
    wait([&] { return pg_->barrier(); }, "barrier");
  }

 private:
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

  template <class Start>
  void wait(Start&& start, const char* what) {
    try {
      auto work = start();
      work->wait(millis(timeout_s_));
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error("dist: rank " + std::to_string(launch_.rank) + " of " + std::to_string(launch_.world_size) + ": a " +
                  what + " failed (" + first_line(e.what()) + "): another rank stopped or did not answer within "
                  "dist.timeout_s = " + std::to_string(static_cast<int64_t>(timeout_s_)) + " s; its log says why");
    }
  }

  Launch launch_;
  double timeout_s_;
  std::string describe_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
};

}  // namespace
#endif

std::string available_backends() {
#ifdef DISTILL_HAVE_GLOO
  return "gloo";
#else
  return "";
#endif
}

std::unique_ptr<Communicator> connect(const Launch& launch, const CommOptions& o) {
  if (o.backend == "nccl")
    throw Error("dist.backend: \"nccl\" is not in this build (LibTorch " + std::string(TORCH_VERSION) +
                ", CPU); use \"gloo\" or \"auto\"");
  if (o.backend != "auto" && o.backend != "gloo")
    throw Error("dist.backend: '" + o.backend + "' is not one of auto | gloo | nccl");
  if (!(o.timeout_s > 0)) throw Error("dist.timeout_s: must be > 0 seconds");
#ifdef DISTILL_HAVE_GLOO
  return std::make_unique<GlooCommunicator>(launch, o);
#else
  throw Error("dist: this distill was built against a LibTorch without c10d's Gloo headers, so it cannot join a " +
              std::to_string(launch.world_size) + "-process job (" + launcher_name(launch.launcher) +
              "); rebuild with libgloo-dev installed, or run one process");
#endif
}

}  // namespace distill::dist
