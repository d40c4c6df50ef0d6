// Registry reads racing writes of the same fields (also run under TSan): a publisher resolves a
// channel while its subscription node is rewritten, and never uses a field it did not check.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "integration/bus_fixture.hpp"
#include "registry.hpp"

namespace shmcast {
namespace {

// The node of the only subscription on the bus.
detail::Node& only_node(const detail::ControlView& view) {
  for (std::uint32_t i = 0; i < view.geometry().node_count; ++i) {
    if (detail::read_once(view.node(i).client) != detail::kFreeNode) return view.node(i);
  }
  throw std::runtime_error("no subscription node in use");
}

TEST(RegistryStressThreads, ANodeFreedWhileAPublisherReadsItIsNeverFollowed) {
  test::Daemon daemon;
  Bus bus = Bus::connect(daemon.bus());
  Subscriber sub = bus.subscriber();
  ASSERT_EQ(sub.subscribe({"hot"}), 1U);
  detail::ControlView view(detail::Segment::open(
      detail::control_name(daemon.bus()), detail::SegmentKind::control, detail::kLayoutVersion));
  detail::Node& node = only_node(view);
  const std::uint32_t client = detail::read_once(node.client);
  ASSERT_LT(client, view.limits().max_clients);

  // Flips the node between its subscriber and "free", as a coordinator freeing and reusing it
  // would, until the reader has seen both often enough.
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::atomic_ref<std::uint32_t> field(node.client);
    for (std::uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
      field.store(i % 2 == 0 ? detail::kFreeNode : client, std::memory_order_relaxed);
    }
    field.store(client, std::memory_order_relaxed);
  });

  detail::GlobCache globs;
  std::vector<detail::Target> targets;
  std::uint64_t found = 0;
  std::uint64_t skipped = 0;
  std::uint64_t wrong = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((found < 10'000 || skipped < 10'000) && std::chrono::steady_clock::now() < deadline) {
    detail::collect_targets(view, "hot", globs, targets);
    if (targets.empty()) {
      ++skipped;
    } else if (targets.size() == 1 && targets[0].slot == client) {
      ++found;
    } else {
      ++wrong;
    }
  }
  stop = true;
  writer.join();
  EXPECT_EQ(wrong, 0U);
  EXPECT_GE(found, 10'000U) << "the reader saw the subscriber too rarely to test anything";
  EXPECT_GE(skipped, 10'000U) << "the reader saw the freed node too rarely to test anything";
  // The coordinator still serves the bus and its subscriber after the race.
  EXPECT_EQ(bus.publish("hot", "after"), 1U);
  auto confirmation = sub.receive(std::chrono::seconds(5));
  ASSERT_TRUE(confirmation.has_value());
  EXPECT_EQ(confirmation->kind, Kind::subscribe);
  auto m = sub.receive(std::chrono::seconds(5));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->kind, Kind::message);
  EXPECT_EQ(m->payload, "after");
}

}  // namespace
}  // namespace shmcast
