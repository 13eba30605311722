// The distill executable: parse, run, and turn any failure into one "error: ..." line and an exit code.
#include <cstdio>
#include <exception>

#include "distill/cli/cli.h"
#include "distill/error.h"

int main(int argc, char** argv) {
  try {
    return distill::run_cli(argc, argv);
  } catch (const distill::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return static_cast<int>(distill::ExitCode::error);
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::fprintf(stderr, "error: internal error (please report it): %s\n", what.substr(0, what.find('\n')).c_str());
    return static_cast<int>(distill::ExitCode::internal);
  }
}
