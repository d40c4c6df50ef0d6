// The README's example: one process subscribes, publishes and reads its own stream. The bus is
// $SHMCAST_BUS, else "default"; a shmcastd must be serving it.
//
//   SHMCAST_BUS=NAME example-hello
#include <chrono>
#include <iostream>

#include <shmcast/shmcast.hpp>

int main() try {
  auto bus = shmcast::Bus::connect();  // $SHMCAST_BUS, else "default"
  auto sub = bus.subscriber();         // a client with its own ring
  sub.subscribe({"news"});             // synchronous: in force when it returns
  sub.psubscribe({"user:*"});
  const std::size_t n = bus.publish("news", "hello");  // deliveries (1 here); never blocks
  bus.publish("user:42", "hi");
  while (auto m = sub.receive(std::chrono::milliseconds(100))) {
    // subscribe, psubscribe, message, pmessage (m->pattern); unsubscribe, punsubscribe, gap
    std::cout << shmcast::kind_name(m->kind) << ' ' << m->channel << ' ' << m->payload << '\n';
  }
  return n == 1 ? 0 : 1;
} catch (const shmcast::Error& e) {  // e.code() and a message that says what to do
  std::cerr << e.what() << '\n';
  return 1;
}
