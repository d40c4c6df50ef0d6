// A strict JSON reader for the tests that read `shm-stat --json`.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace shmcast::test {

struct Json {
  enum class Type { null, boolean, number, string, array, object };
  Type type = Type::null;
  bool boolean = false;
  std::string text;  // a string's bytes, or a number as written
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;

  [[nodiscard]] bool has(std::string_view key) const {
    return std::any_of(members.begin(), members.end(),
                       [&](const auto& m) { return m.first == key; });
  }
  const Json& operator[](std::string_view key) const {
    for (const auto& [k, v] : members) {
      if (k == key) return v;
    }
    throw std::out_of_range(fmt::format("no member '{}'", key));
  }
  [[nodiscard]] std::uint64_t u64() const {
    if (type != Type::number || text.find_first_not_of("0123456789") != std::string::npos) {
      throw std::runtime_error("not an unsigned integer: " + text);
    }
    return std::stoull(text);
  }
  [[nodiscard]] bool flag() const {
    if (type != Type::boolean) throw std::runtime_error("not a boolean");
    return boolean;
  }
  [[nodiscard]] const std::string& str() const {
    if (type != Type::string) throw std::runtime_error("not a string");
    return text;
  }
};

// RFC 8259, strictly: anything else throws. A \u escape must be below U+0100 (shm-stat maps
// each byte of a name to the code point of the same value) and decodes back to that byte; raw
// bytes >= 0x80 are refused because shm-stat never writes them.
class JsonParser {
 public:
  static Json parse(std::string_view text) {
    JsonParser p(text);
    Json v = p.value();
    p.space();
    if (p.pos_ != text.size()) p.fail("trailing bytes");
    return v;
  }

 private:
  explicit JsonParser(std::string_view text) : in_(text) {}

  [[noreturn]] void fail(std::string_view what) const {
    throw std::runtime_error(fmt::format("invalid JSON at byte {}: {}", pos_, what));
  }
  char peek() const { return pos_ < in_.size() ? in_[pos_] : '\0'; }
  char next() {
    if (pos_ >= in_.size()) fail("unexpected end");
    return in_[pos_++];
  }
  void expect(char c) {
    if (next() != c) fail(fmt::format("expected '{}'", c));
  }
  void space() {
    while (pos_ < in_.size() &&
           std::string_view(" \t\r\n").find(in_[pos_]) != std::string_view::npos) {
      ++pos_;
    }
  }
  void literal(std::string_view word) {
    if (in_.substr(pos_, word.size()) != word) fail("bad literal");
    pos_ += word.size();
  }

  Json value() {
    space();
    Json v;
    const char c = peek();
    if (c == '{') {
      v.type = Json::Type::object;
      ++pos_;
      space();
      if (peek() == '}') {
        ++pos_;
        return v;
      }
      for (;;) {
        space();
        std::string key = string();
        space();
        expect(':');
        v.members.emplace_back(std::move(key), value());
        space();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.type = Json::Type::array;
      ++pos_;
      space();
      if (peek() == ']') {
        ++pos_;
        return v;
      }
      for (;;) {
        v.items.push_back(value());
        space();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.type = Json::Type::string;
      v.text = string();
      return v;
    }
    if (c == 't' || c == 'f') {
      v.type = Json::Type::boolean;
      v.boolean = c == 't';
      literal(c == 't' ? "true" : "false");
      return v;
    }
    if (c == 'n') {
      literal("null");
      return v;
    }
    v.type = Json::Type::number;
    v.text = number();
    return v;
  }

  std::string number() {
    const std::size_t start = pos_;
    if (peek() == '-') ++pos_;
    const auto digits = [&] {
      const std::size_t from = pos_;
      while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') ++pos_;
      if (pos_ == from) fail("expected a digit");
      return pos_ - from;
    };
    const std::size_t first = pos_;
    if (digits() > 1 && in_[first] == '0') fail("leading zero");
    if (peek() == '.') {
      ++pos_;
      digits();
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      digits();
    }
    return std::string(in_.substr(start, pos_ - start));
  }

  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      const char c = next();
      const auto byte = static_cast<unsigned char>(c);
      if (c == '"') return out;
      if (byte < 0x20) fail("raw control byte in a string");
      if (byte >= 0x80) fail("raw byte >= 0x80 in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = next();
      switch (e) {
        case '"':
        case '\\':
        case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = next();
            const auto digit =
                std::string_view("0123456789abcdef")
                    .find(static_cast<char>(h >= 'A' && h <= 'F' ? h - 'A' + 'a' : h));
            if (digit == std::string_view::npos) fail("bad \\u escape");
            code = code * 16 + static_cast<unsigned>(digit);
          }
          if (code > 0xff) fail("\\u escape above U+00FF");
          out += static_cast<char>(code);
          break;
        }
        default: fail("bad escape");
      }
    }
  }

  std::string_view in_;
  std::size_t pos_ = 0;
};

}  // namespace shmcast::test
