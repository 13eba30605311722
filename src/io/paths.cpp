#include "distill/io/paths.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace distill::paths {
namespace {

bool stat_path(const std::string& path, struct stat* st, bool follow = true) {
  if (path.empty()) return false;
  return (follow ? ::stat(path.c_str(), st) : ::lstat(path.c_str(), st)) == 0;
}

void collect_files(const std::string& root, const std::string& rel, std::vector<std::string>& out) {
  for (const std::string& name : list_dir(rel.empty() ? root : join(root, rel))) {
    const std::string child_rel = rel.empty() ? name : rel + "/" + name;
    struct stat st;
    if (!stat_path(join(root, child_rel), &st, /*follow=*/false)) continue;
    if (S_ISDIR(st.st_mode)) collect_files(root, child_rel, out);
    else if (S_ISREG(st.st_mode)) out.push_back(child_rel);
  }
}

}  // namespace

std::string join(std::string_view a, std::string_view b) {
  if (a.empty() || is_absolute(b)) return std::string(b);
  if (b.empty()) return std::string(a);
  std::string out(a);
  if (out.back() != '/') out += '/';
  out += b;
  return out;
}

std::string filename(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  const size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

std::string parent(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  const size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return "";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

bool is_absolute(std::string_view path) { return !path.empty() && path.front() == '/'; }

std::string normalize(std::string_view path) {
  if (path.empty()) return "";
  const bool absolute_path = is_absolute(path);
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    const std::string_view part = path.substr(i, j - i);
    if (part.empty() || part == ".") {
      // skip
    } else if (part == "..") {
      if (!parts.empty() && parts.back() != "..") parts.pop_back();
      else if (!absolute_path) parts.push_back(part);  // "/.." is "/"
    } else {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string out = absolute_path ? "/" : "";
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k) out += '/';
    out += parts[k];
  }
  if (out.empty()) out = ".";
  return out;
}

std::string current_dir() {
  std::vector<char> buf(4096);
  while (!::getcwd(buf.data(), buf.size())) {
    if (errno != ERANGE) return ".";
    buf.resize(buf.size() * 2);
  }
  return buf.data();
}

std::string absolute(std::string_view path) {
  return normalize(is_absolute(path) ? std::string(path) : join(current_dir(), path));
}

std::string temp_dir() {
  const char* t = std::getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

bool exists(const std::string& path) {
  struct stat st;
  return stat_path(path, &st);
}

bool is_directory(const std::string& path) {
  struct stat st;
  return stat_path(path, &st) && S_ISDIR(st.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat st;
  return stat_path(path, &st) && S_ISREG(st.st_mode);
}

bool create_directories(const std::string& path, std::string* error) {
  if (path.empty() || is_directory(path)) return true;
  const std::string up = parent(path);
  if (!up.empty() && up != path && !create_directories(up, error)) return false;
  if (::mkdir(path.c_str(), 0777) == 0 || (errno == EEXIST && is_directory(path))) return true;
  if (error) *error = path + (errno == EEXIST ? " exists and is not a folder" : ": " + std::string(std::strerror(errno)));
  return false;
}

bool read_file(const std::string& path, std::string& out, std::string* error) {
  out.clear();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  auto fail = [&](int err) {
    if (error) *error = path + ": " + std::strerror(err);
    return false;
  };
  if (fd < 0) return fail(errno);
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return fail(err);
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return true;
}

bool remove_file(const std::string& path) { return ::unlink(path.c_str()) == 0 || errno == ENOENT; }

bool remove_tree(const std::string& path) {
  struct stat st;
  if (!stat_path(path, &st, /*follow=*/false)) return true;
  if (!S_ISDIR(st.st_mode)) return remove_file(path);
  for (const std::string& name : list_dir(path)) remove_tree(join(path, name));
  return ::rmdir(path.c_str()) == 0 || errno == ENOENT;
}

std::vector<std::string> list_dir(const std::string& path, std::string* error) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (!dir) {
    if (error && errno != ENOENT) *error = path + ": " + std::strerror(errno);
    return names;
  }
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> list_files_recursive(const std::string& path) {
  std::vector<std::string> out;
  collect_files(path, "", out);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace distill::paths
