// Cooperative preemption. While a PreemptionGuard lives, SIGTERM, SIGINT and SIGUSR1 (Slurm's
// --signal=USR1@N) only set a flag: the trainer finishes the current step, writes a checkpoint and returns,
// and the process exits with ExitCode::preempted (75). A second SIGINT exits at once (status 130).
#pragma once

namespace distill {

class PreemptionGuard {
 public:
  PreemptionGuard();   // installs the handlers
  ~PreemptionGuard();  // restores the previous ones
  PreemptionGuard(const PreemptionGuard&) = delete;
  PreemptionGuard& operator=(const PreemptionGuard&) = delete;

  // The signal that asked the run to stop, or 0.
  static int requested();
  // Acts as if `signal` arrived (tests, and the DISTILL_TEST_STOP_AFTER_STEP hook).
  static void request(int signal);
};

const char* signal_name(int signal);

}  // namespace distill
