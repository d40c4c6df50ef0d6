// Glob patterns with Redis `stringmatchlen` semantics, matched in linear time.
#include "glob.hpp"

#include <algorithm>
#include <iterator>

namespace shmcast::detail {

Glob::Glob(std::string_view pattern) : pattern_(pattern) {
  const std::size_t n = pattern_.size();
  std::size_t i = 0;
  while (i < n) {
    const auto c = static_cast<std::uint8_t>(pattern_[i]);
    if (c == '*') {
      // A run of stars matches exactly what one star matches; keeping one bounds the work.
      if (tokens_.empty() || tokens_.back().kind != Kind::star) {
        tokens_.push_back({Kind::star, 0, 0});
      }
      ++i;
    } else if (c == '?') {
      tokens_.push_back({Kind::any, 0, 0});
      ++i;
    } else if (c == '[') {
      i = compile_class(i + 1);
    } else if (c == '\\' && i + 1 < n) {
      tokens_.push_back({Kind::literal, static_cast<std::uint8_t>(pattern_[i + 1]), 0});
      i += 2;
    } else {
      // Redis reads a trailing `\` as a literal backslash.
      tokens_.push_back({Kind::literal, c, 0});
      ++i;
    }
  }
  // A sentinel that matches no byte spares match() a bounds check per step.
  tokens_.push_back({Kind::end, 0, 0});
}

std::size_t Glob::compile_class(std::size_t i) {
  const std::size_t n = pattern_.size();
  ByteSet set{};
  const auto add = [&set](unsigned lo, unsigned hi) {
    for (unsigned b = lo; b <= hi; ++b) set.bits[b >> 6] |= std::uint64_t{1} << (b & 63);
  };
  const bool negate = i < n && pattern_[i] == '^';
  if (negate) ++i;
  // The order of these tests is Redis's: `\` escapes only when a byte follows it, a `]` even
  // right after `[` closes the class, and `x-y` is a range whenever three bytes remain, so
  // `[a-]` is the range `]`..`a` and the class runs on to the end of the pattern.
  while (i < n) {
    const auto c = static_cast<std::uint8_t>(pattern_[i]);
    if (c == '\\' && n - i >= 2) {
      const auto escaped = static_cast<std::uint8_t>(pattern_[i + 1]);
      add(escaped, escaped);
      i += 2;
    } else if (c == ']') {
      ++i;
      break;
    } else if (n - i >= 3 && pattern_[i + 1] == '-') {
      const auto end = static_cast<std::uint8_t>(pattern_[i + 2]);
      add(std::min(c, end), std::max(c, end));  // Redis swaps a reversed range
      i += 3;
    } else {
      add(c, c);
      ++i;
    }
  }
  if (negate) {
    for (auto& word : set.bits) word = ~word;
  }
  const bool full = std::all_of(std::begin(set.bits), std::end(set.bits),
                                [](std::uint64_t word) { return word == ~std::uint64_t{0}; });
  if (full) {
    tokens_.push_back({Kind::any, 0, 0});
  } else {
    tokens_.push_back({Kind::set, 0, static_cast<std::uint32_t>(sets_.size())});
    sets_.push_back(set);
  }
  return i;
}

bool Glob::match(std::string_view s) const noexcept {
  // Redis returns no match for an empty string unless the pattern is empty too, even for `*`.
  if (s.empty()) return pattern_.empty();

  const Token* const tokens = tokens_.data();
  constexpr std::size_t no_star = ~std::size_t{0};
  std::size_t p = 0;
  std::size_t i = 0;
  std::size_t star_p = no_star;  // token just after the last star seen
  std::size_t star_i = 0;        // where that star's run currently ends in s
  while (i < s.size()) {
    const Token t = tokens[p];
    const auto b = static_cast<std::uint8_t>(s[i]);
    if (t.kind == Kind::literal) [[likely]] {
      if (t.byte == b) {
        ++p;
        ++i;
        continue;
      }
    } else if (t.kind == Kind::star) {
      if (tokens[p + 1].kind == Kind::end) return true;
      star_p = ++p;
      star_i = i;
      continue;
    } else if (t.kind == Kind::any || (t.kind == Kind::set && sets_[t.set_index].has(b))) {
      ++p;
      ++i;
      continue;
    }
    // Only the last star needs to grow: every other token consumes exactly one byte, so
    // growing an earlier star can only move the tail later, where it already failed.
    if (star_p == no_star) return false;
    p = star_p;
    i = ++star_i;
  }
  if (tokens[p].kind == Kind::star) ++p;
  return tokens[p].kind == Kind::end;
}

bool glob_match(std::string_view pattern, std::string_view s) {
  return Glob(pattern).match(s);
}

}  // namespace shmcast::detail
