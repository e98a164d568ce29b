// The tool's signal taking (tools/common/signals.hpp): one action is one signal. coreutils
// `timeout -s INT` sends its signal to the child and then to the child's process group,
// so `sluice gzip` got SIGINT twice and, in about one run in ten, took the second as the
// user insisting ("interrupted again ... exiting now") and cut its orderly exit short.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>

#include "common/signals.hpp"

namespace {

using namespace std::chrono_literals;
using sluice::tool::repeat_of;
using sluice::tool::signal_seen;

TEST(tool_signals, a_signal_sent_twice_by_one_process_within_a_second_is_one) {
  const auto t = std::chrono::steady_clock::now();
  const signal_seen first{.sig = SIGINT, .pid = 4242, .code = SI_USER, .at = t};
  EXPECT_TRUE(repeat_of(first, {.sig = SIGINT, .pid = 4242, .code = SI_USER, .at = t + 1ms}));
  EXPECT_TRUE(repeat_of(first, {.sig = SIGINT, .pid = 4242, .code = SI_USER, .at = t + 999ms}));
  // A second action counts: later, from another process, another signal, or the
  // terminal's ^C (the kernel sends it: pid 0).
  EXPECT_FALSE(repeat_of(first, {.sig = SIGINT, .pid = 4242, .code = SI_USER, .at = t + 1s}));
  EXPECT_FALSE(repeat_of(first, {.sig = SIGINT, .pid = 4243, .code = SI_USER, .at = t + 1ms}));
  EXPECT_FALSE(repeat_of(first, {.sig = SIGTERM, .pid = 4242, .code = SI_USER, .at = t + 1ms}));
  const signal_seen tty{.sig = SIGINT, .pid = 0, .code = SI_KERNEL, .at = t};
  EXPECT_FALSE(repeat_of(tty, {.sig = SIGINT, .pid = 0, .code = SI_KERNEL, .at = t + 1ms}));
  EXPECT_FALSE(repeat_of(signal_seen{}, first));  // nothing taken yet
}

// A signal to this thread with the sender and code given (the kernel lets a process say
// so only of signals to itself).
void send_to_self(int sig, pid_t pid, int code) {
  siginfo_t info{};
  info.si_signo = sig;
  info.si_code = code;
  info.si_pid = pid;
  ASSERT_EQ(::syscall(SYS_rt_tgsigqueueinfo, ::getpid(), ::gettid(), sig, &info), 0);
}

TEST(tool_signals, take_drops_the_repeat_and_returns_a_second_action) {
  struct sigaction now {};
  ASSERT_EQ(::sigaction(SIGINT, nullptr, &now), 0);
  if (now.sa_handler == SIG_IGN) GTEST_SKIP() << "SIGINT is ignored in this process; signal_block leaves it so";
  const sluice::tool::signal_block signals;  // blocks SIGINT in this thread
  ASSERT_EQ(::pthread_kill(::pthread_self(), SIGINT), 0);  // as timeout's kill(child): from this process
  EXPECT_EQ(signals.take(5s), SIGINT);
  ASSERT_EQ(::pthread_kill(::pthread_self(), SIGINT), 0);  // as timeout's kill(0): the same sender
  EXPECT_EQ(signals.take(200ms), 0) << "the same process's second send was taken as a second action";
  send_to_self(SIGINT, 0, SI_KERNEL);  // ^C on the terminal
  EXPECT_EQ(signals.take(5s), SIGINT);
  send_to_self(SIGINT, 0, SI_KERNEL);  // and again: the user insists
  EXPECT_EQ(signals.take(5s), SIGINT);
  sigset_t pending;
  ASSERT_EQ(::sigpending(&pending), 0);
  EXPECT_EQ(::sigismember(&pending, SIGINT), 0);  // all taken: none reaches the old mask
}

}  // namespace
