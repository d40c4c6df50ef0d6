#include "tool_support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace shmcast::tool {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);  // so a signal handler may store it

// The pipe behind stop_fd(): the handler writes a byte, which write(2) may do in a handler.
int g_stop_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int /*signal*/) {
  g_stop.store(true, std::memory_order_relaxed);
  if (g_stop_pipe[1] >= 0) {
    const int saved = errno;
    (void)!::write(g_stop_pipe[1], "x", 1);
    errno = saved;
  }
}

void append_hex(std::string& out, char c) {
  fmt::format_to(std::back_inserter(out), "\\x{:02x}", static_cast<unsigned char>(c));
}

}  // namespace

void install_signal_handlers() {
  if (g_stop_pipe[0] < 0 && ::pipe2(g_stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::runtime_error(fmt::format("cannot make a pipe: {}", std::strerror(errno)));
  }
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int stop_fd() {
  return g_stop_pipe[0];
}

bool stop_requested() {
  return g_stop.load(std::memory_order_relaxed);
}

void sleep_unless_stopped(std::chrono::duration<double> duration) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(duration);
  while (!stop_requested()) {
    const auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) return;
    std::this_thread::sleep_for(std::min<Clock::duration>(left, 100ms));
  }
}

void write_stdout(std::string_view bytes) {
  if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) == bytes.size() &&
      std::fflush(stdout) == 0) {
    return;
  }
  const int error = errno;
  if (error == EPIPE) throw StdoutClosed{};
  throw std::runtime_error(fmt::format("cannot write to standard output: {}: check where it goes",
                                       std::strerror(error)));
}

void append_quoted(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\a': out += "\\a"; break;
      case '\b': out += "\\b"; break;
      default:
        if (c >= 0x20 && c < 0x7f) {
          out += c;
        } else {
          append_hex(out, c);
        }
    }
  }
  out += '"';
}

std::string one_line(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (static_cast<unsigned char>(c) < 0x20) {
      append_hex(out, c);
    } else {
      out += c;
    }
  }
  return out;
}

std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    fmt::print(stderr, "{0}: {1}: see {0} --help\n", app.get_name(), one_line(e.what()));
    return 2;
  }
  return std::nullopt;
}

int run_main(std::string_view program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    fmt::print(stderr, "{0}: {1}: see {0} --help\n", program, one_line(e.what()));
    return 2;
  } catch (const StdoutClosed&) {
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: {}\n", program, one_line(e.what()));
    return 1;
  }
}

}  // namespace shmcast::tool
