// A nats-server with JetStream for one test: 127.0.0.1, a free port, a temporary store
// directory. Never outlives the test process: the destructor kills it, and the child
// asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), so a crashed or
// killed test binary leaks no server either.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../support/child_signals.hpp"  // relative: the JetStream bench includes this header too
#ifndef SLUICE_NATS_SERVER_PATH
#define SLUICE_NATS_SERVER_PATH ""
#endif

namespace sluice_test {

inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("free_port: bind failed");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// fork + exec of args[0] with stdout and stderr into `out_file` (opened with O_CREAT and
// `mode_flags`: O_APPEND or O_TRUNC); the child gets SIGKILL when this process dies.
inline pid_t spawn(std::vector<std::string> args, const std::string& out_file, int mode_flags) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    sluice_test::default_stop_signals();
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);  // the parent died before prctl
    const int fd = ::open(out_file.c_str(), O_WRONLY | O_CREAT | mode_flags, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// Polls pred every `every` until it holds (true) or `limit` passes (false).
template <class Pred>
bool poll_until(Pred&& pred, std::chrono::milliseconds limit,
                std::chrono::milliseconds every = std::chrono::milliseconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(every);  // polling a condition, not synchronising
  }
  return true;
}

inline bool port_accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

class nats_server {
 public:
  static bool available() { return std::string(SLUICE_NATS_SERVER_PATH).size() > 0 &&
                                   ::access(SLUICE_NATS_SERVER_PATH, X_OK) == 0; }

  nats_server() : nats_server(true) {}
  // jetstream false: a plain NATS server, without -js (no JetStream API answers).
  explicit nats_server(bool jetstream) : port_(free_port()), jetstream_(jetstream) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "sluice-js-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    start();
  }
  ~nats_server() {
    kill9();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  nats_server(const nats_server&) = delete;
  nats_server& operator=(const nats_server&) = delete;

  [[nodiscard]] std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] const std::string& dir() const { return dir_; }
  // Whether the next start() runs it with JetStream (-js).
  void set_jetstream(bool on) { jetstream_ = on; }

  // Starts it (again, on the same port and store) and waits until it accepts (bounded).
  void start() {
    std::vector<std::string> args = {SLUICE_NATS_SERVER_PATH, "-a", "127.0.0.1", "-p", std::to_string(port_),
                                     "-sd", dir_};
    if (jetstream_) args.insert(args.begin() + 1, "-js");
    const std::string log = dir_ + "/server.log";
    pid_ = spawn(std::move(args), log, O_APPEND);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!port_accepts(port_)) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("nats-server exited at start; see " + log);
      }
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("nats-server did not start in 20 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  // SIGSTOP / SIGCONT: a stalled server (its connections stay open, nothing answers).
  // No-op if not running. (kill9 ends a stopped one too.)
  void pause() {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  void resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }

  // SIGKILL and reap (no-op if not running).
  void kill9() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

 private:
  int port_;
  bool jetstream_ = true;
  std::string dir_;
  pid_t pid_ = -1;
};

}  // namespace sluice_test

namespace sluice_test {

// A child process (fork + exec) whose stdout+stderr go to a file; killed with the parent.
class child_process {
 public:
  child_process(std::vector<std::string> args, std::string out_file)
      : out_(std::move(out_file)), pid_(spawn(std::move(args), out_, O_TRUNC)) {}
  ~child_process() { kill9(); }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  void signal(int sig) const {
    if (pid_ > 0) ::kill(pid_, sig);
  }

  void kill9() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      ::waitpid(pid_, &st, 0);
      pid_ = -1;
    }
  }
  // The exit status (-1: still running after `limit`, then killed; -2: killed by a signal).
  int wait(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (pid_ > 0) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -2;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        kill9();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return -1;
  }
  [[nodiscard]] std::string output() const {
    std::string s;
    if (FILE* f = std::fopen(out_.c_str(), "r")) {
      char buf[4096];
      std::size_t k;
      while ((k = std::fread(buf, 1, sizeof(buf), f)) > 0) s.append(buf, k);
      std::fclose(f);
    }
    return s;
  }

 private:
  std::string out_;
  pid_t pid_ = -1;
};

}  // namespace sluice_test
