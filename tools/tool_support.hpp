// What the command line tools (shmcast, shm-stat, shmcast-bridge) share: how they stop on a
// signal, write to stdout, quote bytes, and report errors, so that all three behave alike in a
// script.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

namespace shmcast::tool {

// Makes SIGINT and SIGTERM set the flag that stop_requested() reads, without SA_RESTART so that
// a wait in progress returns early and the stop is seen at once; and ignores SIGPIPE, so that a
// reader that closed our stdout shows up as StdoutClosed from write_stdout().
void install_signal_handlers();

// True once SIGINT or SIGTERM came. Long-running work polls it between short waits and then
// leaves through its destructors: a subscriber's slot is released at once instead of reaped, and
// shm-stat --watch ends after the snapshot it is printing.
bool stop_requested();

// A descriptor that poll() reports readable once SIGINT or SIGTERM came (after
// install_signal_handlers()), so an event loop waits for a stop without waking to look for one.
int stop_fd();

// Sleeps for `duration` unless SIGINT/SIGTERM comes first.
void sleep_unless_stopped(std::chrono::duration<double> duration);

// The command line is wrong: exit status 2, like CLI11's own parse errors.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Whoever read our stdout went away (EPIPE): stop quietly, as after Ctrl-C.
struct StdoutClosed {};

// Writes `bytes` to stdout and flushes, so that output reaches a pipe at once. Throws
// StdoutClosed on EPIPE, std::runtime_error on any other failure.
void write_stdout(std::string_view bytes);

// Appends `text` as a quoted string with C escapes and \xHH for bytes that are not printable in
// the C locale, as redis-cli quotes strings (redis's sdscatrepr).
void append_quoted(std::string& out, std::string_view text);

// `text` with control bytes as \xHH, so that an error is one line on stderr even when it quotes
// a name holding control bytes.
std::string one_line(std::string_view text);

// Parses the command line into `app`. Returns the exit status when the program ends here: that of
// --help, or 2 after a parse error, printed as one line that points to --help.
std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv);

// Runs `body` and returns its exit status, turning what it throws into the tool's exit status
// and one line on stderr prefixed with `program`: 2 for UsageError, 0 for StdoutClosed, 1 for
// any other std::exception.
int run_main(std::string_view program, const std::function<int()>& body);

}  // namespace shmcast::tool
