#include "distill/train/preemption.h"

#include <unistd.h>

#include <csignal>
#include <cstring>

namespace distill {

namespace {

volatile std::sig_atomic_t g_requested = 0;
struct sigaction g_previous[3];
const int kSignals[3] = {SIGTERM, SIGINT, SIGUSR1};

void write_stderr(const char* text) {
  ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

void on_signal(int signal) {
  if (signal == SIGINT && g_requested != 0) {
    write_stderr("\ndistill: second interrupt, exiting now without a checkpoint\n");
    ::_exit(130);
  }
  g_requested = signal;
  write_stderr(signal == SIGINT ? "\ndistill: interrupt: finishing the step and writing a checkpoint (Ctrl-C again to exit at once)\n"
                                : "\ndistill: stop signal: finishing the step and writing a checkpoint\n");
}

}  // namespace

PreemptionGuard::PreemptionGuard() {
  g_requested = 0;
  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &action, &g_previous[i]);
}

PreemptionGuard::~PreemptionGuard() {
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &g_previous[i], nullptr);
}

int PreemptionGuard::requested() { return g_requested; }
void PreemptionGuard::request(int signal) { g_requested = signal; }

const char* signal_name(int signal) {
  switch (signal) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    default: return "a signal";
  }
}

}  // namespace distill
