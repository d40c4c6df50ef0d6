// Glob::match on the patterns a PUBLISH meets: a pattern is compiled once at PSUBSCRIBE and
// matched against every published channel, so only match() is timed.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "glob.hpp"

namespace {

using shmcast::detail::Glob;

void run_match(benchmark::State& state, std::string_view pattern, const std::string& channel) {
  const Glob glob(pattern);
  std::string_view s = channel;
  for (auto _ : state) {
    // Launder the input too, so the compiler cannot fold the match out of the loop.
    benchmark::DoNotOptimize(s);
    benchmark::DoNotOptimize(glob.match(s));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(channel.size()));
}

void BM_GlobLiteral(benchmark::State& state, std::string channel) {
  run_match(state, "news.sports.football", channel);
}
BENCHMARK_CAPTURE(BM_GlobLiteral, match, std::string("news.sports.football"));
BENCHMARK_CAPTURE(BM_GlobLiteral, mismatch_last_byte, std::string("news.sports.footbalk"));

void BM_GlobManyStars(benchmark::State& state, std::string channel) {
  run_match(state, "*a*b*c*d*", channel);
}
// 64 bytes with a, b, c and d spread out; the mismatch has no d, so every star is retried.
BENCHMARK_CAPTURE(BM_GlobManyStars, match_64_bytes,
                  std::string("xxxxxxxxxxxxxxaxxxxxxxxxxxxxxbxxxxxxxxxxxxxxcxxxxxxxxxxxxxxdxxxx"));
BENCHMARK_CAPTURE(BM_GlobManyStars, mismatch_64_bytes,
                  std::string("xxxxxxxxxxxxxxaxxxxxxxxxxxxxxbxxxxxxxxxxxxxxcxxxxxxxxxxxxxxxxxxx"));

void BM_GlobClasses(benchmark::State& state, std::string channel) {
  run_match(state, "user:[0-9][0-9]*:[a-z]?lerts", channel);
}
BENCHMARK_CAPTURE(BM_GlobClasses, match, std::string("user:4217:palerts"));
BENCHMARK_CAPTURE(BM_GlobClasses, mismatch, std::string("user:4217:Palerts"));

void BM_GlobPathological(benchmark::State& state) {
  // An exponential matcher never finishes this; the linear one does pattern x string steps.
  run_match(state, "a*a*a*a*a*a*a*a*a*b", std::string(10'000, 'a'));
}
BENCHMARK(BM_GlobPathological);

}  // namespace
