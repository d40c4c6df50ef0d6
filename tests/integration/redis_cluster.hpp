// A private Redis Cluster for the bridge's tests: redis-servers with cluster-enabled on loopback
// ports of their own (each with its node file in its own temporary directory), joined with
// `redis-cli --cluster create`, and stopped by pid when destroyed.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/bridge_support.hpp"
#include "integration/redis_server.hpp"
#include "integration/run_command.hpp"

namespace shmcast::test {

/// One cluster-enabled redis-server on a loopback port, with no slots until it is given some.
class ClusterNode {
 public:
  explicit ClusterNode(std::vector<std::string> extra = {})
      : port_(free_tcp_port()), server_(arguments(port_, std::move(extra))) {}

  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] std::string address() const { return fmt::format("127.0.0.1:{}", port_); }
  [[nodiscard]] std::string url() const { return "redis://" + address(); }
  [[nodiscard]] RedisServer& server() { return server_; }
  /// A command's reply, through the node's unix socket.
  std::vector<std::string> call(const std::vector<std::string>& args) {
    RedisClient client(server_.socket());
    if (!password_.empty()) client.call({"AUTH", password_});
    return client.call(args);
  }
  /// The password call() gives from now on.
  void use_password(std::string password) { password_ = std::move(password); }
  /// A field of CLUSTER INFO or INFO replication, e.g. "cluster_state".
  std::string info(const std::string& command, const std::string& field) {
    std::vector<std::string> args{command};
    if (command == "INFO") args.emplace_back("replication");
    if (command == "CLUSTER") args.emplace_back("INFO");
    const std::string text = call(args).front();
    const auto at = text.find(field + ":");
    if (at == std::string::npos) return {};
    const auto begin = at + field.size() + 1;
    return text.substr(begin, text.find('\r', begin) - begin);
  }

 private:
  static std::vector<std::string> arguments(int port, std::vector<std::string> extra) {
    std::vector<std::string> argv{"--port",
                                  std::to_string(port),
                                  "--bind",
                                  "127.0.0.1",
                                  "--cluster-enabled",
                                  "yes",
                                  "--cluster-port",
                                  std::to_string(free_tcp_port()),
                                  "--cluster-config-file",
                                  "nodes.conf"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }

  int port_;
  RedisServer server_;
  std::string password_;
};

/// `primaries` cluster nodes, each with `replicas` replicas, created as one cluster; returns
/// once every node agrees that all slots are served and every replica has its primary's data.
class RedisCluster {
 public:
  RedisCluster(int primaries, int replicas, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> create{"redis-cli", "--cluster", "create"};
    for (int i = 0; i < primaries * (1 + replicas); ++i) {
      nodes_.push_back(std::make_unique<ClusterNode>(extra));
      create.push_back(nodes_.back()->address());
    }
    create.insert(create.end(), {"--cluster-replicas", std::to_string(replicas), "--cluster-yes"});
    const Result created = run(create);
    if (created.status != 0) throw std::runtime_error("cluster create failed: " + created.out);
    wait_until_ready();
  }

  [[nodiscard]] std::size_t size() const { return nodes_.size(); }
  ClusterNode& node(std::size_t i) { return *nodes_.at(i); }
  std::string id(std::size_t i) { return node(i).call({"CLUSTER", "MYID"}).front(); }

  /// The node that serves `slot` now, as node 0 (or the first node up) sees it.
  std::size_t owner(int slot) {
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (!nodes_[i]->server().running()) continue;
      std::istringstream lines(node(i).call({"CLUSTER", "NODES"}).front());
      for (std::string line; std::getline(lines, line);) {
        std::istringstream words(line);
        std::vector<std::string> w;
        for (std::string word; words >> word;) w.push_back(word);
        if (w.size() < 9 || w[2].find("master") == std::string::npos) continue;
        for (std::size_t k = 8; k < w.size(); ++k) {
          if (w[k].starts_with('[')) continue;  // a slot being migrated or imported
          const auto dash = w[k].find('-');
          const int first = std::stoi(w[k].substr(0, dash));
          const int last = dash == std::string::npos ? first : std::stoi(w[k].substr(dash + 1));
          if (slot >= first && slot <= last) return index_of(w[1]);
        }
      }
      break;
    }
    throw std::runtime_error(fmt::format("no node serves slot {}", slot));
  }

  /// The replica that follows node `primary`.
  std::size_t replica_of(std::size_t primary) {
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      const auto role = node(i).call({"ROLE"});
      if (role.at(0) == "slave" && role.at(2) == std::to_string(node(primary).port())) return i;
    }
    throw std::runtime_error("node has no replica");
  }

  /// Moves `slot` (which holds no keys) to node `to`, as `redis-cli --cluster reshard` does:
  /// IMPORTING on the target, MIGRATING on the source, then NODE on both and every other primary.
  void move_slot(int slot, std::size_t to) {
    const std::size_t from = owner(slot);
    const std::string s = std::to_string(slot);
    expect_ok(node(to).call({"CLUSTER", "SETSLOT", s, "IMPORTING", id(from)}));
    expect_ok(node(from).call({"CLUSTER", "SETSLOT", s, "MIGRATING", id(to)}));
    const std::string target = id(to);
    expect_ok(node(to).call({"CLUSTER", "SETSLOT", s, "NODE", target}));
    expect_ok(node(from).call({"CLUSTER", "SETSLOT", s, "NODE", target}));
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (i != from && i != to && node(i).call({"ROLE"}).at(0) == "master") {
        expect_ok(node(i).call({"CLUSTER", "SETSLOT", s, "NODE", target}));
      }
    }
  }

 private:
  static void expect_ok(const std::vector<std::string>& reply) {
    EXPECT_EQ(reply, std::vector<std::string>{"OK"});
  }

  std::size_t index_of(const std::string& address) {
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (address.starts_with(nodes_[i]->address() + "@")) return i;
    }
    throw std::runtime_error("unknown node " + address);
  }

  void wait_until_ready() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      for (;;) {
        const auto role = node(i).call({"ROLE"}).at(0);
        if (node(i).info("CLUSTER", "cluster_state") == "ok" &&
            (role == "master" || node(i).info("INFO", "master_link_status") == "up")) {
          break;
        }
        if (std::chrono::steady_clock::now() > deadline) {
          throw std::runtime_error("the cluster did not become ready within 20 s");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }

  std::vector<std::unique_ptr<ClusterNode>> nodes_;
};

}  // namespace shmcast::test
