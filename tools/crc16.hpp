// The hash slot of a key or shard channel in a Redis Cluster: CRC16 (XMODEM) of the key, or of
// its {hash tag}, modulo 16384.
#pragma once

#include <cstdint>
#include <string_view>

namespace shmcast::bridge {

inline constexpr int kClusterSlots = 16384;

// CRC-16/XMODEM (polynomial 0x1021, initial value 0, no reflection), the variant Redis uses.
std::uint16_t crc16(std::string_view bytes);

// The slot Redis's CLUSTER KEYSLOT gives `key`: only the part between the first '{' and the
// first '}' after it is hashed when that part is not empty, so that keys sharing a tag share a
// slot.
int key_slot(std::string_view key);

}  // namespace shmcast::bridge
