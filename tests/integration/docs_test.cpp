// The documentation holds to the tree: every relative link in README.md, docs/*.md and
// bench/README.md leads to a file (and a heading, where it names one), the README's example is
// the program examples_test runs, the README's demo output is what tools/demo.sh prints, the
// README shows no command the suite does not run, and every flag given to one of shmcast's
// programs on a documented command line is one the program takes.
#include <signal.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "bus_fixture.hpp"
#include "run_command.hpp"

namespace shmcast::test {
namespace {

namespace fs = std::filesystem;

const fs::path kSource = SHMCAST_SOURCE_DIR;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

/// The documents whose links and command lines are checked, relative to the source tree.
std::vector<fs::path> documents() {
  std::vector<fs::path> docs{"README.md", "bench/README.md"};
  for (const auto& entry : fs::directory_iterator(kSource / "docs")) {
    if (entry.path().extension() == ".md") docs.push_back(fs::relative(entry.path(), kSource));
  }
  return docs;
}

struct CodeBlock {
  std::string info;  ///< what follows the opening fence: "sh", "cpp", or empty
  std::vector<std::string> lines;
};

/// A Markdown document split into its fenced code blocks and the prose around them.
struct Document {
  std::string prose;  ///< every line outside a fence
  std::vector<CodeBlock> blocks;
};

Document parse(const std::string& text) {
  Document doc;
  bool in_block = false;
  for (const std::string& line : lines_of(text)) {
    if (line.starts_with("```")) {
      if (!in_block) doc.blocks.push_back({line.substr(3), {}});
      in_block = !in_block;
      continue;
    }
    if (in_block) {
      doc.blocks.back().lines.push_back(line);
    } else {
      doc.prose += line + "\n";
    }
  }
  return doc;
}

/// GitHub's anchor of a heading: lower case, without punctuation but `-` and `_`, spaces made
/// `-`; a repeated heading gets -1, -2, ...
std::set<std::string> anchors(const std::string& prose) {
  std::set<std::string> out;
  std::map<std::string, int> seen;
  for (const std::string& line : lines_of(prose)) {
    const auto level = line.find_first_not_of('#');
    if (level == 0 || level == std::string::npos || line[level] != ' ') continue;
    std::string slug;
    for (const char c : line.substr(level + 1)) {
      const auto u = static_cast<unsigned char>(c);
      if (std::isalnum(u) != 0 || c == '-' || c == '_') {
        slug += static_cast<char>(std::tolower(u));
      } else if (c == ' ') {
        slug += '-';
      }
    }
    const int n = seen[slug]++;
    out.insert(n == 0 ? slug : fmt::format("{}-{}", slug, n));
  }
  return out;
}

TEST(Docs, EveryRelativeLinkResolves) {
  // [text](target), not inside a code span; the text may run over a line break.
  const std::regex link(R"(\[[^\]]*\]\(([^)\s]+)\))");
  const std::regex code_span("`[^`\n]*`");
  std::size_t checked = 0;
  for (const fs::path& doc : documents()) {
    const std::string prose =
        std::regex_replace(parse(read_text(kSource / doc)).prose, code_span, "");
    for (std::sregex_iterator it(prose.begin(), prose.end(), link), end; it != end; ++it) {
      const std::string target = (*it)[1];
      if (target.find("://") != std::string::npos || target.starts_with("mailto:")) continue;
      ++checked;
      const auto hash = target.find('#');
      const std::string path = target.substr(0, hash);
      const fs::path file = path.empty() ? kSource / doc : kSource / doc.parent_path() / path;
      if (!fs::exists(file)) {
        ADD_FAILURE() << doc << ": the link " << target << " leads to no file";
        continue;
      }
      if (hash == std::string::npos) continue;
      const std::string anchor = target.substr(hash + 1);
      const std::set<std::string> headings = anchors(parse(read_text(file)).prose);
      EXPECT_TRUE(headings.contains(anchor))
          << doc << ": the link " << target << " names no heading of "
          << fs::relative(file, kSource);
    }
  }
  EXPECT_GT(checked, 20U) << "the links were not found: is the pattern right?";
}

/// The README's code block of kind `info` that follows the heading `heading`.
const CodeBlock* readme_block(const std::string& heading, const std::string& info) {
  static const std::string readme = read_text(kSource / "README.md");
  static const Document doc = parse(readme);
  // Which block follows the heading: count the fences before it.
  const auto at = readme.find("\n" + heading + "\n");
  if (at == std::string::npos) return nullptr;
  std::size_t index = 0;
  for (std::size_t pos = readme.find("\n```"); pos < at; pos = readme.find("\n```", pos + 1)) {
    ++index;
  }
  for (std::size_t i = index / 2; i < doc.blocks.size(); ++i) {
    if (doc.blocks[i].info == info) return &doc.blocks[i];
  }
  return nullptr;
}

TEST(Docs, TheReadmeExampleIsTheProgramExamplesTestRuns) {
  const CodeBlock* block = readme_block("## C++ API", "cpp");
  ASSERT_NE(block, nullptr) << "no cpp block under '## C++ API' in README.md";
  std::string quoted;
  for (const std::string& line : block->lines) quoted += line + "\n";
  const std::string program = read_text(kSource / "examples/hello.cpp");
  EXPECT_NE(program.find(quoted), std::string::npos)
      << "README.md's example is not examples/hello.cpp (Examples.HelloReadsWhatItPublished "
         "runs that file):\n"
      << quoted;
}

/// Stops the coordinator the demo leaves running, by its pid, and waits for it to go. The pid
/// comes from the bus itself, so a demo that failed before printing it leaves nothing behind.
struct DemoCoordinator {
  std::string bus;
  pid_t pid = 0;
  ~DemoCoordinator() {
    if (pid <= 0) {
      try {
        pid = inspect(bus).coordinator_pid;
      } catch (const Error&) {
        return;  // no bus: the demo never started a coordinator
      }
    }
    if (pid <= 0 || ::kill(pid, SIGTERM) != 0) return;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (::kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
};

TEST(Docs, TheDemoPrintsWhatTheReadmeShows) {
  const CodeBlock* block = readme_block("## What the first command shows", "");
  ASSERT_NE(block, nullptr) << "no output block under '## What the first command shows'";
  const std::string bus = unique_bus("demo");
  DemoCoordinator coordinator{bus};
  Command demo({"bash", (kSource / "tools/demo.sh").string()},
               {"SHMCAST_DEMO_BUS=" + bus, "SHMCAST_DEMO_BIN=" + bin_dir()});
  demo.close_stdin();
  const auto status = demo.wait(std::chrono::seconds(60));
  std::smatch pid;
  if (std::regex_search(demo.out(), pid, std::regex(R"(stop it with: kill (\d+))"))) {
    coordinator.pid = std::stoi(pid[1]);
  }
  ::unlink(fmt::format("/tmp/shmcastd-{}.log", bus).c_str());
  ASSERT_EQ(status, 0) << demo.out() << demo.err();
  EXPECT_GT(coordinator.pid, 0) << demo.out();
  // The README shows part of the output: its lines, in order, with "..." for what it leaves out.
  const std::vector<std::string> printed = lines_of(demo.out());
  auto next = printed.begin();
  for (const std::string& line : block->lines) {
    if (line == "...") continue;
    next = std::find(next, printed.end(), line);
    ASSERT_NE(next, printed.end())
        << "README.md shows '" << line << "', which the demo did not print (in that place):\n"
        << demo.out();
    ++next;
  }
}

// What runs each command the README shows. A command added to the README needs a line here, and
// so a test or the demo that runs it.
const std::map<std::string, std::string> kReadmeCommands{
    {"tools/quickstart.sh",
     "tools/deps.sh, the build every test needs, then tools/demo.sh "
     "(TheDemoPrintsWhatTheReadmeShows)"},
    {"tools/check.sh", "the script that runs this suite"},
    {"build/bin/shmcastd --bus app &", "every Daemon of the integration tests"},
    {"SHMCAST_BUS=app build/bin/example-hello", "Examples.HelloReadsWhatItPublished"},
};

TEST(Docs, TheReadmeShowsOnlyCommandsTheSuiteRuns) {
  const Document doc = parse(read_text(kSource / "README.md"));
  for (const CodeBlock& block : doc.blocks) {
    if (block.info != "sh") continue;
    for (const std::string& line : block.lines) {
      const std::string command = line.substr(0, line.find(" #"));
      const auto last = command.find_last_not_of(' ');
      if (last == std::string::npos) continue;
      EXPECT_TRUE(kReadmeCommands.contains(command.substr(0, last + 1)))
          << "README.md shows '" << command << "', which no test or demo runs";
    }
  }
}

/// The words of a shell line up to its comment, without brackets (`[--json]`) or quotes.
std::vector<std::string> words(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line.substr(0, line.find(" #")));
  for (std::string word; in >> word;) {
    std::erase_if(word, [](char c) { return c == '[' || c == ']' || c == '\'' || c == '"'; });
    if (!word.empty()) out.push_back(word);
  }
  return out;
}

TEST(Docs, EveryFlagOnADocumentedCommandLineIsOneTheProgramTakes) {
  const std::set<std::string> programs{"shmcastd",       "shmcast",       "shm-stat",
                                       "shmcast-bridge", "shmcast-bench", "shmcast-soak",
                                       "floor-bench"};
  std::map<std::string, std::string> help;  // by program, its --help
  std::size_t checked = 0;
  for (const fs::path& doc : documents()) {
    for (const CodeBlock& block : parse(read_text(kSource / doc)).blocks) {
      if (block.info != "sh" && !block.info.empty()) continue;
      std::map<std::string, std::string> variables;  // B=build/bin/shmcast-bench
      for (std::string line : block.lines) {
        if (line.starts_with("$ ")) line = line.substr(2);
        const std::vector<std::string> w = words(line);
        if (w.size() == 1 && w[0].find('=') != std::string::npos) {
          variables[w[0].substr(0, w[0].find('='))] = w[0].substr(w[0].find('=') + 1);
          continue;
        }
        std::string program;
        for (const std::string& word : w) {
          if (word == "&" || word == "|" || word == "<" || word == ";") {
            program.clear();
            continue;
          }
          if (program.empty()) {
            std::string path = word;
            if (word.starts_with("$") && variables.contains(word.substr(1))) {
              path = variables[word.substr(1)];
            }
            const std::string name = fs::path(path).filename().string();
            if (programs.contains(name)) program = name;
            continue;
          }
          if (!word.starts_with("--")) continue;
          const std::string flag = word.substr(0, word.find('='));
          if (!help.contains(program)) {
            if (!fs::exists(fs::path(bin_dir()) / program)) {
              help[program] = {};  // not in this build (benchmarks or the bridge off)
            } else {
              const Result r = run({bin_dir() + "/" + program, "--help"});
              help[program] = r.out + r.err;
            }
          }
          if (help[program].empty()) continue;
          ++checked;
          const std::regex whole("(^|[^-A-Za-z0-9])" + flag + "([^-A-Za-z0-9]|$)");
          EXPECT_TRUE(std::regex_search(help[program], whole))
              << doc << ": '" << line << "' gives " << program << " " << flag
              << ", which its --help does not list";
        }
      }
    }
  }
  EXPECT_GT(checked, 20U) << "the command lines were not found: is the parsing right?";
}

}  // namespace
}  // namespace shmcast::test
