// The one error type of distill_core. Every user-facing failure throws distill::Error with a message that
// names the file or JSON key at fault and says how to fix it; only main() turns it into "error: ..." and
// a non-zero exit.
#pragma once

#include <stdexcept>
#include <string>

namespace distill {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Process exit codes, documented in the README.
enum class ExitCode : int {
  ok = 0,
  error = 1,        // a user error: bad config, bad file, bad flag
  usage = 2,        // command-line parse error
  internal = 3,     // a bug: an exception that is not distill::Error
  preempted = 75,   // stopped by a signal after writing a checkpoint (EX_TEMPFAIL: requeue me)
};

}  // namespace distill
