// The POSIX file helpers that distill uses instead of the C++17 file-system library (paths.h says why).
#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include "distill/io/paths.h"
#include "../test_util.h"

namespace paths = distill::paths;
using distill::test::ScratchDir;
using distill::test::write_text;

TEST_CASE("paths: lexical operations") {
  CHECK(paths::join("a", "b") == "a/b");
  CHECK(paths::join("a/", "b") == "a/b");
  CHECK(paths::join("a", "/abs") == "/abs");
  CHECK(paths::join("", "b") == "b");
  CHECK(paths::join("a", "") == "a");

  CHECK(paths::filename("a/b.txt") == "b.txt");
  CHECK(paths::filename("a/b/") == "b");
  CHECK(paths::filename("b") == "b");
  CHECK(paths::parent("a/b") == "a");
  CHECK(paths::parent("a/b/") == "a");
  CHECK(paths::parent("b") == "");
  CHECK(paths::parent("/b") == "/");

  CHECK(paths::normalize("a/./b//c/../d") == "a/b/d");
  CHECK(paths::normalize("/x/../../y") == "/y");
  CHECK(paths::normalize("../a/..") == "..");
  CHECK(paths::normalize("a/..") == ".");
  CHECK(paths::normalize("") == "");

  CHECK(paths::is_absolute("/a"));
  CHECK_FALSE(paths::is_absolute("a"));
  CHECK(paths::absolute("x/../y") == paths::join(paths::current_dir(), "y"));
  CHECK(paths::absolute("/a/./b") == "/a/b");
}

TEST_CASE("paths: queries, folders and removal") {
  ScratchDir dir("paths");
  CHECK(paths::is_directory(dir.path));
  CHECK_FALSE(paths::exists(dir / "none"));
  CHECK_FALSE(paths::exists(""));

  REQUIRE(paths::create_directories(dir / "a/b/c"));
  CHECK(paths::create_directories(dir / "a/b/c"));  // already there
  write_text(dir / "a/one.txt", "1");
  write_text(dir / "a/b/two.txt", "2");
  write_text(dir / "a/b/c/three.txt", "3");
  REQUIRE(::symlink((dir / "a/b").c_str(), (dir / "a/link").c_str()) == 0);
  CHECK(paths::is_regular_file(dir / "a/one.txt"));
  CHECK_FALSE(paths::is_regular_file(dir / "a/b"));
  CHECK(paths::list_dir(dir / "a") == std::vector<std::string>{"b", "link", "one.txt"});
  CHECK(paths::list_dir(dir / "none").empty());
  {
    std::string error;
    CHECK(paths::list_dir(dir / "none", &error).empty());
    CHECK(error.empty());  // missing is not an error
    CHECK(paths::list_dir(dir / "a/one.txt", &error).empty());
    CHECK(error == dir / "a/one.txt" + std::string(": Not a directory"));
  }
  // Symbolic links are not followed: the files under a/b are listed once.
  CHECK(paths::list_files_recursive(dir / "a") == std::vector<std::string>{"b/c/three.txt", "b/two.txt", "one.txt"});
  CHECK(distill::test::count_files(dir / "a/b", ".txt") == 1);

  // A file in the way of a folder is an error with its reason.
  std::string why;
  CHECK_FALSE(paths::create_directories(dir / "a/one.txt/sub", &why));
  CHECK(why == (dir / "a/one.txt") + " exists and is not a folder");

  CHECK(paths::remove_file(dir / "a/one.txt"));
  CHECK(paths::remove_file(dir / "a/one.txt"));  // already gone is success
  // remove_tree removes the link, not what it points to.
  write_text(dir / "keep.txt", "k");
  REQUIRE(::symlink((dir / "keep.txt").c_str(), (dir / "a/b/c/to-keep").c_str()) == 0);
  CHECK(paths::remove_tree(dir / "a"));
  CHECK_FALSE(paths::exists(dir / "a"));
  CHECK(paths::is_regular_file(dir / "keep.txt"));
  CHECK(paths::remove_tree(dir / "a"));  // nothing there is success
}

TEST_CASE("paths: an unwritable parent is reported, not thrown") {
  if (::geteuid() == 0) SUCCEED("root ignores permissions; nothing to check");
  else {
    ScratchDir dir("paths-ro");
    REQUIRE(paths::create_directories(dir / "ro"));
    REQUIRE(::chmod((dir / "ro").c_str(), 0555) == 0);
    std::string why;
    CHECK_FALSE(paths::create_directories(dir / "ro/x/y", &why));
    CHECK_THAT(why, Catch::Contains("ermission"));
    ::chmod((dir / "ro").c_str(), 0755);
  }
}
