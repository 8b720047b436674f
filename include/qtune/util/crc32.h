#pragma once
// CRC-32 (the zlib/PNG polynomial) of bytes and of files: what a checkpoint manifest records to catch a truncated or
// corrupted file before resume reads it. Not a defence against tampering, only against accidents.
#include <cstddef>
#include <cstdint>
#include <string>

namespace qtune {

uint32_t crc32_update(uint32_t crc, const void* data, size_t size);  // start from 0
uint32_t crc32_of_file(const std::string& path);                    // throws naming the path when unreadable

}  // namespace qtune
