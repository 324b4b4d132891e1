// A child process for tests: started with posix_spawn, stdout captured through a pipe,
// killed (SIGTERM, then SIGKILL) and reaped by the destructor.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace qbridge::testing {

class Subprocess {
 public:
  Subprocess() = default;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess() { Stop(); }

  // Starts argv[0] (looked up in PATH) with stderr to `stderr_path` ("" keeps ours).
  bool Start(std::vector<std::string> argv, const std::string& stderr_path = "",
             const std::string& cwd = "") {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    if (!stderr_path.empty())
      posix_spawn_file_actions_addopen(&fa, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const int rc = ::posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    out_ = fds[0];
    if (rc != 0) {
      pid_ = -1;
      return false;
    }
    return true;
  }

  // The next line of stdout, or "" after `timeout_ms` or at EOF.
  std::string ReadLine(int timeout_ms) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      const size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "";
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, int(left.count())) <= 0) continue;
      char tmp[4096];
      const ssize_t n = ::read(out_, tmp, sizeof(tmp));
      if (n <= 0) return "";
      buf_.append(tmp, size_t(n));
    }
  }

  // Exit status if the child has exited (reaping it), else -1.
  int TryWait() {
    if (pid_ <= 0) return status_;
    int st;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    return pid_ > 0 ? -1 : status_;
  }

  pid_t pid() const { return pid_; }
  void Signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // Waits up to `timeout_ms` for the child to exit; its status, or -1.
  int Wait(int timeout_ms) {
    for (int waited = 0; TryWait() < 0 && waited < timeout_ms; waited += 20)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return TryWait();
  }

  void Stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      for (int i = 0; i < 100 && TryWait() < 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
      }
    }
    if (out_ >= 0) ::close(out_);
    out_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  int status_ = -1;
  std::string buf_;
};

}  // namespace qbridge::testing
