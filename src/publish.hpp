// The publish path: Bus::publish, with per-thread route caches so that a publish to a warm
// route takes no lock and makes no system call (publish.cpp).
#pragma once

#include <cstdint>

namespace shmcast::detail {

/// Routes this thread resolved from the registry, on any bus: what tests count to see which
/// changes make a publisher resolve again.
[[nodiscard]] std::uint64_t resolved_routes() noexcept;

}  // namespace shmcast::detail
