// The launcher's environment (include/distill/dist/launch.h). Torch-free.
#include "distill/dist/launch.h"

#include <cctype>
#include <cstdlib>

#include "distill/error.h"

namespace distill::dist {

namespace {

// A non-negative integer variable; `what` says what it should hold.
std::optional<int64_t> integer(const EnvLookup& env, const std::string& name) {
  const std::optional<std::string> v = env(name);
  if (!v) return std::nullopt;
  const std::string& s = *v;
  if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos)
    throw Error("environment: " + name + "='" + s + "' is not a non-negative integer; the launcher (torchrun, srun) "
                "sets it: unset it to run a single process");
  return std::stoll(s);
}

int64_t port_of(const EnvLookup& env, const std::string& name) {
  const std::optional<int64_t> p = integer(env, name);
  if (!p) return 0;
  if (*p < 1 || *p > 65535)
    throw Error("environment: " + name + "=" + std::to_string(*p) + " is not a TCP port (1..65535); give a free port, "
                "e.g. MASTER_PORT=29500");
  return *p;
}

void check_rank(const Launch& l, const std::string& rank_var, const std::string& world_var) {
  if (l.world_size < 1)
    throw Error("environment: " + world_var + "=0; a job has at least one process");
  if (l.rank >= l.world_size)
    throw Error("environment: " + rank_var + "=" + std::to_string(l.rank) + " is not below " + world_var + "=" +
                std::to_string(l.world_size) + "; each process has a rank 0.." + std::to_string(l.world_size - 1));
}

}  // namespace

const char* launcher_name(Launcher l) {
  switch (l) {
    case Launcher::torchrun: return "torchrun";
    case Launcher::env: return "environment";
    case Launcher::slurm: return "slurm";
    default: return "none";
  }
}

std::optional<std::string> process_env(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v ? std::optional<std::string>(v) : std::nullopt;
}

std::string first_slurm_host(const std::string& nodelist) {
  auto bad = [&](const std::string& why) {
    return Error("environment: SLURM_JOB_NODELIST='" + nodelist + "' " + why + "; set MASTER_ADDR to the first node's "
                 "address");
  };
  // The first entry: up to the first comma outside brackets.
  std::string first;
  int depth = 0;
  for (char ch : nodelist) {
    if (ch == '[') ++depth;
    if (ch == ']') --depth;
    if (depth < 0) throw bad("has an unmatched ']'");
    if (ch == ',' && depth == 0) break;
    first += ch;
  }
  if (depth != 0) throw bad("has an unmatched '['");
  // Each bracket group becomes its first member: "gpu[003-010,012]" -> "gpu003" (zero padding kept).
  std::string host;
  for (size_t i = 0; i < first.size();) {
    if (first[i] != '[') {
      host += first[i++];
      continue;
    }
    const size_t close = first.find(']', i);
    std::string member = first.substr(i + 1, close - i - 1);
    member = member.substr(0, member.find_first_of(",-"));
    if (member.empty() || member.find_first_not_of("0123456789") != std::string::npos) throw bad("has a range that is not numbers");
    host += member;
    i = close + 1;
  }
  if (host.empty()) throw bad("names no host");
  return host;
}

Launch launch_from_env(const EnvLookup& env) {
  Launch l;
  const std::optional<int64_t> rank = integer(env, "RANK"), world = integer(env, "WORLD_SIZE");
  if (rank || world) {
    if (!rank || !world)
      throw Error(std::string("environment: ") + (rank ? "RANK" : "WORLD_SIZE") + " is set but " +
                  (rank ? "WORLD_SIZE" : "RANK") + " is not; a launcher sets both (torchrun does), or neither for one process");
    l.launcher = env("TORCHELASTIC_RUN_ID") || env("TORCHELASTIC_RESTART_COUNT") ? Launcher::torchrun : Launcher::env;
    l.rank = *rank;
    l.world_size = *world;
    check_rank(l, "RANK", "WORLD_SIZE");
    l.local_rank = integer(env, "LOCAL_RANK").value_or(l.rank);
    l.master_addr = env("MASTER_ADDR").value_or("");
    l.master_port = port_of(env, "MASTER_PORT");
    const std::optional<std::string> agent = env("TORCHELASTIC_USE_AGENT_STORE");
    l.agent_store = agent && (*agent == "True" || *agent == "true" || *agent == "1");
    l.restart_count = integer(env, "TORCHELASTIC_RESTART_COUNT").value_or(0);
  } else if (const std::optional<int64_t> step_tasks = integer(env, "SLURM_STEP_NUM_TASKS")) {
    // Only an srun step sets SLURM_STEP_NUM_TASKS: the batch script itself (or an salloc shell) also has
    // SLURM_PROCID and the job's SLURM_NTASKS, and a distill started there is one process.
    const std::optional<int64_t> procid = integer(env, "SLURM_PROCID");
    if (!procid) throw Error("environment: SLURM_STEP_NUM_TASKS is set but SLURM_PROCID is not; run under srun, or unset it");
    l.launcher = Launcher::slurm;
    l.rank = *procid;
    l.world_size = *step_tasks;
    check_rank(l, "SLURM_PROCID", "SLURM_STEP_NUM_TASKS");
    l.local_rank = integer(env, "SLURM_LOCALID").value_or(0);
    if (const auto addr = env("MASTER_ADDR")) {
      l.master_addr = *addr;
    } else if (const auto nodes = env("SLURM_JOB_NODELIST") ? env("SLURM_JOB_NODELIST") : env("SLURM_NODELIST")) {
      l.master_addr = first_slurm_host(*nodes);
    }
    l.master_port = port_of(env, "MASTER_PORT");
    if (l.master_port == 0) {
      // One port per job, so that two jobs sharing a node do not meet (as PyTorch Lightning derives it).
      const std::optional<int64_t> job = integer(env, "SLURM_JOB_ID");
      l.master_port = 15000 + (job ? *job % 10000 : 0);
    }
  } else {
    return l;
  }
  if (!l.distributed()) return l;
  if (l.master_addr.empty())
    throw Error(std::string("environment: MASTER_ADDR is not set; the ") + launcher_name(l.launcher) +
                " launch needs the address of rank 0's host (torchrun sets it; under srun it comes from "
                "SLURM_JOB_NODELIST, or set it)");
  if (l.master_port == 0)
    throw Error("environment: MASTER_PORT is not set; give the port rank 0 listens on, e.g. MASTER_PORT=29500");
  return l;
}

}  // namespace distill::dist
