// File-system helpers on plain POSIX calls, used instead of std::filesystem everywhere in distill.
//
// Why not std::filesystem: the CUDA LibTorch 2.x wheels export a statically linked copy of libstdc++'s
// std::filesystem from libtorch_cpu.so (pytorch/pytorch#133437). A program linked against them may bind
// its std::filesystem calls to that copy, which crashed (a jump to address 0 in remove_all, found with
// cuda-gdb) on an H100 machine with the torch 2.11 CUDA wheel, even with libstdc++ linked first. These
// helpers only call libc, so they behave the same whichever LibTorch is linked. Tests use them too.
//
// Paths are strings with '/' separators. Queries never throw: a path that cannot be examined reads as
// absent. Operations that can fail say so through their return value and `error`.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace distill::paths {

// "a" + "b" -> "a/b"; an absolute `b` is returned as is; an empty side gives the other.
std::string join(std::string_view a, std::string_view b);
// The last component ("a/b.txt" -> "b.txt"; "a/b/" -> "b").
std::string filename(std::string_view path);
// Everything before the last component ("a/b" -> "a", "b" -> "", "/b" -> "/").
std::string parent(std::string_view path);
bool is_absolute(std::string_view path);
// Removes "." components, resolves "x/.." lexically and collapses repeated '/' ("" stays "").
std::string normalize(std::string_view path);
// `path` made absolute against the current directory, normalised.
std::string absolute(std::string_view path);
std::string current_dir();
// $TMPDIR, else /tmp.
std::string temp_dir();

bool exists(const std::string& path);
bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);

// mkdir -p. False when a component cannot be created, with `error` naming it and why ("/a/f exists and is not
// a folder", "/a/b: Permission denied").
bool create_directories(const std::string& path, std::string* error = nullptr);
// unlink; true when the file is gone afterwards (also when it never existed).
bool remove_file(const std::string& path);
// rm -rf without following symbolic links; best effort, true when nothing is left.
bool remove_tree(const std::string& path);
// The names in a folder (no "." or ".."), sorted; empty when it cannot be read. A folder that exists but cannot
// be listed (not a folder, no permission) also sets `error` ("<path>: Permission denied"); a missing one does not.
std::vector<std::string> list_dir(const std::string& path, std::string* error = nullptr);
// The whole file in `out`; false with `error` ("<path>: No such file or directory") when it cannot be read.
bool read_file(const std::string& path, std::string& out, std::string* error = nullptr);
// Every regular file under `path`, as paths relative to it, sorted (symbolic links are not followed).
std::vector<std::string> list_files_recursive(const std::string& path);

}  // namespace distill::paths
