#pragma once
#include <string>

namespace qtune {

// Deletes a file or a directory tree; a missing path is not an error. Use this, not
// std::filesystem::remove_all: the PyPI libtorch.so exports its own copies of std::filesystem
// functions, and remove_all on a non-empty directory crashes in a process linked against it.
void remove_tree(const std::string& path);

}  // namespace qtune
