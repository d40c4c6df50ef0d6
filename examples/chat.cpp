// A chat room: every member subscribes to the room's channel and posts JSON messages to it, so
// each member sees every message, their own included, in the order each member sent them.
//
//   example-chat --bus NAME     (a shmcastd must be serving NAME)
//
// The payload is JSON written by hand, to show what a payload must survive: the text may hold
// quotes, backslashes, newlines and control characters, and JSON has to escape all of them.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <shmcast/shmcast.hpp>

#include "example_bus.hpp"

namespace {

// A JSON string literal for `text`: quotes, backslashes and every control character escaped
// (RFC 8259, section 7). Bytes from 0x80 up pass through: UTF-8 needs no escaping.
std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned char>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string chat_message(std::string_view room, std::string_view user, std::string_view text) {
  return "{\"room\":" + json_string(room) + ",\"user\":" + json_string(user) +
         ",\"text\":" + json_string(text) + "}";
}

}  // namespace

int main(int argc, char** argv) try {
  auto bus = shmcast::Bus::connect(example::bus_name(argc, argv));
  const std::string room = "lobby";
  const std::string channel = "chat:room:" + room;

  // Two members join the room. In a real chat each is its own process.
  auto alice = bus.subscriber();
  auto bob = bus.subscriber();
  alice.subscribe({channel});
  bob.subscribe({channel});

  // What they say, with the characters JSON must escape.
  struct Line {
    std::string user;
    std::string text;
  };
  const std::vector<Line> lines{
      {"alice", "hi bob!"},
      {"bob", "hey alice, did you see the \"release\" notes?"},
      {"alice", "yes: C:\\build\\out is the path\nand\ttabs work too"},
      {"bob", "a bell \x07 is escaped as \\u0007, caf\xc3\xa9 stays UTF-8"},
  };
  std::vector<std::string> sent;
  for (const auto& line : lines) {
    sent.push_back(chat_message(room, line.user, line.text));
    // 2 deliveries: alice and bob are both in the room.
    if (bus.publish(channel, sent.back()) != 2) {
      std::cerr << "chat: a member missed a message\n";
      return 1;
    }
  }

  // Each member reads the room: byte for byte what was sent, in order.
  bool ok = true;
  for (auto* member : {&alice, &bob}) {
    std::vector<std::string> got;
    while (auto frame = member->receive(std::chrono::milliseconds(200))) {
      if (frame->kind == shmcast::Kind::message) got.push_back(frame->payload);
    }
    ok = ok && got == sent;
  }
  std::cout << "chat: " << sent.size() << " messages in " << channel << ":\n";
  for (const auto& json : sent) std::cout << "  " << json << "\n";
  if (!ok) {
    std::cerr << "chat: a member did not receive every message intact and in order\n";
    return 1;
  }
  std::cout << "chat: alice and bob each received all " << sent.size() << " messages intact\n";
  return 0;
} catch (const shmcast::Error& e) {
  std::cerr << "chat: " << e.what() << "\n";
  return 1;
}
