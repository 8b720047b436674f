#pragma once
// A read-only file mapped into memory. Mapped copy-on-write (MAP_PRIVATE, PROT_READ|PROT_WRITE) so that a
// tensor viewing the map may be written to by accident without a SIGSEGV and without touching the file.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace qtune::io {

class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // Lets the kernel drop the pages wholly inside [offset, offset + length) (they are re-read from the file if
  // touched again): after a tensor is quantized its 16-bit pages need not stay resident.
  void release(size_t offset, size_t length) const;

 private:
  MappedFile() = default;
  std::string path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qtune::io
