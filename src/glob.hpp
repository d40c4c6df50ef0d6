// Glob patterns with Redis `stringmatchlen` semantics, matched in linear time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shmcast::detail {

/// A pattern compiled once and matched many times. Matching is byte-wise, unsigned,
/// case-sensitive and binary-safe; it runs in O(pattern tokens x string length) time
/// with no recursion, whatever the pattern.
class Glob {
 public:
  /// Compiles `pattern`. Every byte string is a valid pattern, as in Redis.
  explicit Glob(std::string_view pattern);

  /// True when `s` matches the whole pattern. Does not allocate; safe to call from many
  /// threads at once.
  [[nodiscard]] bool match(std::string_view s) const noexcept;
  [[nodiscard]] const std::string& pattern() const noexcept { return pattern_; }

 private:
  // Every token but a star consumes exactly one byte: a literal, any byte, or a byte set.
  // `end` is a sentinel after the last token and matches nothing.
  enum class Kind : std::uint8_t { literal, any, set, star, end };
  struct Token {
    Kind kind;
    std::uint8_t byte;        // for literal
    std::uint32_t set_index;  // for set: index into sets_
  };
  struct ByteSet {
    std::uint64_t bits[4];
    [[nodiscard]] bool has(std::uint8_t b) const noexcept {
      return (bits[b >> 6] >> (b & 63)) & 1U;
    }
  };

  // Compiles the class whose body starts at pattern_[i] (just past the `[`); returns the
  // index just past the class.
  std::size_t compile_class(std::size_t i);

  std::string pattern_;
  std::vector<Token> tokens_;
  std::vector<ByteSet> sets_;
};

/// One-shot match, same semantics as Glob::match. It compiles the pattern, so it allocates;
/// a hot path keeps a Glob.
[[nodiscard]] bool glob_match(std::string_view pattern, std::string_view s);

}  // namespace shmcast::detail
