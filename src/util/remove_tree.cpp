#include "qtune/util/remove_tree.h"

#include <ftw.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "qtune/util/error.h"

namespace qtune {
namespace {

int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }

}  // namespace

void remove_tree(const std::string& path) {
  if (::access(path.c_str(), F_OK) != 0) return;
  if (::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    fail("{}: cannot remove: {}", path, std::strerror(errno));
}

}  // namespace qtune
