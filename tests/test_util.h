// Helpers shared by the tests: fixture paths, scratch folders, and running the distill binary.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "distill/io/paths.h"

namespace distill::test {

inline std::string source_path(const std::string& rel) { return std::string(DISTILL_SOURCE_DIR) + "/" + rel; }

// A fresh folder under the build's temp area, removed when the object dies.
struct ScratchDir {
  std::string path;
  explicit ScratchDir(const std::string& name) {
    std::random_device rd;
    path = paths::join(paths::temp_dir(), "distill-test-" + name + "-" + std::to_string(::getpid()) + "-" +
                                              std::to_string(rd() % 100000));
    paths::remove_tree(path);
    paths::create_directories(path);
  }
  ~ScratchDir() { paths::remove_tree(path); }
  std::string operator/(const std::string& rel) const { return paths::join(path, rel); }
};

// How many regular files directly in `dir` have names ending in `suffix` ("" counts them all).
inline int count_files(const std::string& dir, const std::string& suffix = "") {
  int n = 0;
  for (const std::string& name : paths::list_dir(dir))
    n += paths::is_regular_file(paths::join(dir, name)) && name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  return n;
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}
inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `distill <args>` through the shell; args are passed verbatim (quote them yourself).
inline CommandResult run_distill(const std::string& args, const std::string& env = "") {
  std::string cmd = env + (env.empty() ? "" : " ") + std::string(DISTILL_BINARY) + " " + args + " 2>&1";
  CommandResult r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Starts `distill <argv...>` in the background with extra environment variables; output goes to `log_path`.
inline pid_t spawn_distill(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                           const std::string& log_path) {
  pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    FILE* log = std::fopen(log_path.c_str(), "a");
    if (log) {
      ::dup2(fileno(log), STDOUT_FILENO);
      ::dup2(fileno(log), STDERR_FILENO);
    }
    std::vector<char*> args;
    args.push_back(const_cast<char*>(DISTILL_BINARY));
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(DISTILL_BINARY, args.data());
    ::_exit(127);
  }
  return pid;
}

// Waits for `pid`; returns its exit code, or 128 + signal when a signal ended it.
inline int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

inline int count_lines_starting(const std::string& text, const std::string& prefix) {
  int n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(prefix, 0) == 0) ++n;
  return n;
}

}  // namespace distill::test
