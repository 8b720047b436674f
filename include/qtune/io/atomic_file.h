#pragma once
// Files that appear complete or not at all: write to a temporary sibling, fsync, rename over the target,
// fsync the directory. Checkpoints and exports use this so a crash never leaves a half-written file.
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

namespace qtune::io {

// Calls `write` with a stream onto a temporary file next to `path`, then publishes it atomically.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

void write_text_atomically(const std::string& path, const std::string& text);

// fsync of a directory, so that renames and new entries in it survive a crash (best effort where it cannot be opened).
void fsync_directory(const std::string& path);

}  // namespace qtune::io
