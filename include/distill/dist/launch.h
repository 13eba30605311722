// Where this process sits in a data-parallel job, from its launcher's environment: torchrun (`RANK`,
// `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, and under its elastic agent
// `TORCHELASTIC_USE_AGENT_STORE` / `TORCHELASTIC_RESTART_COUNT`) or Slurm's srun (`SLURM_PROCID`,
// `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`, the master from `MASTER_ADDR` or the first host of the job's node
// list; the batch script itself, which has SLURM_PROCID and SLURM_NTASKS but no step, runs one process).
// With none of them set the process runs alone, as always. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace distill::dist {

enum class Launcher { none, torchrun, env, slurm };
const char* launcher_name(Launcher l);  // "none" | "torchrun" | "environment" | "slurm"

struct Launch {
  Launcher launcher = Launcher::none;
  int64_t rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr;  // where rank 0 (or torchrun's agent) serves the rendezvous store
  int64_t master_port = 0;
  // torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE=True): every rank connects as a client and
  // keys live under /worker/attempt_<restart_count>, as PyTorch's own rendezvous does.
  bool agent_store = false;
  int64_t restart_count = 0;
  bool distributed() const { return world_size > 1; }
};

// The value of an environment variable, or nullopt. Tests pass their own.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
std::optional<std::string> process_env(const std::string& name);

// Reads the launcher's variables. Inconsistent or malformed ones (RANK without WORLD_SIZE, RANK >= WORLD_SIZE,
// a port that is not 1..65535, ...) are a distill::Error naming the variable and the fix.
Launch launch_from_env(const EnvLookup& env = process_env);

// The first host of a Slurm node list ("gpu[003-010,012],login1" -> "gpu003"). Throws distill::Error on a
// list it cannot read.
std::string first_slurm_host(const std::string& nodelist);

}  // namespace distill::dist
