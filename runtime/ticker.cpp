// runtime/ticker.cpp — sluice::detail::ticker (see include/sluice/detail/ticker.hpp).
#include "sluice/detail/ticker.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

namespace sluice::detail {

// Wait protocol:
//   ticker thread: lock mu; wait_until(next, pred: stop); unlock; if stopped, exit;
//                  else tick() without mu held.
//   stop():        lock mu; stop = true; unlock; notify_all; join.
// No lost wake-up: the thread tests `stop` under mu before it sleeps, and stop() sets
// it under mu, so either the thread sees it or it is already waiting when the notify
// comes. tick runs without mu, so stop() never waits for the lock behind a slow tick;
// the join waits that tick out.
struct ticker::state {
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;                  // guarded by mu
  std::atomic<bool> alive{false};     // the thread has not finished ticking yet
  std::atomic<std::uint64_t> count{0};
  std::chrono::steady_clock::duration interval{};
  std::function<bool()> tick;
  std::string name;
  std::thread thread;

  void loop() {
    char buf[16];
    const std::size_t n = name.copy(buf, sizeof buf - 1);
    buf[n] = '\0';
    pthread_setname_np(pthread_self(), buf);
    auto next = std::chrono::steady_clock::now() + interval;
    for (;;) {
      {
        std::unique_lock lk(mu);
        if (cv.wait_until(lk, next, [&] { return stop; })) break;
      }
      bool more = false;
      try {
        more = tick();
      } catch (...) {
        break;  // ends the ticking; a tick that threw is not counted
      }
      // relaxed: a statistic; nothing is published through it.
      count.fetch_add(1, std::memory_order_relaxed);
      if (!more) break;
      next += interval;
      const auto now = std::chrono::steady_clock::now();
      if (next < now) next = now + interval;  // an overrun: do not catch up
    }
    // release: pairs with the acquire in running(); a reader that sees false knows the
    // thread made its last tick.
    alive.store(false, std::memory_order_release);
  }
};

ticker::ticker() noexcept = default;

ticker::ticker(std::chrono::steady_clock::duration interval, std::function<bool()> tick, std::string name)
    : state_(std::make_unique<state>()) {
  if (interval <= interval.zero()) interval = std::chrono::milliseconds(1);
  // At most kLongestTick: now + interval must not overflow the clock (an interval of
  // nanoseconds::max() wrapped into the past, and the thread ticked millions of times a
  // second). A tick 100 years away is never, as far as any process is concerned.
  interval = std::min(interval, kLongestTick);
  state_->interval = interval;
  state_->tick = std::move(tick);
  state_->name = std::move(name);
  // relaxed: set before the thread starts; std::thread's start is the edge.
  state_->alive.store(true, std::memory_order_relaxed);
  try {
    state_->thread = std::thread([st = state_.get()] { st->loop(); });
  } catch (const std::system_error& e) {  // a thread or memory limit: say which thread
    throw std::system_error(e.code(), "sluice: cannot start the thread '" + state_->name + "'");
  }
}

ticker::ticker(ticker&&) noexcept = default;

ticker& ticker::operator=(ticker&& o) noexcept {
  if (this != &o) {
    stop();
    state_ = std::move(o.state_);
  }
  return *this;
}

ticker::~ticker() { stop(); }

void ticker::stop() noexcept {
  if (!state_) return;
  {
    std::lock_guard lk(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  if (state_->thread.joinable()) state_->thread.join();
}

bool ticker::running() const noexcept {
  // acquire: pairs with the release store at the end of loop().
  return state_ && state_->alive.load(std::memory_order_acquire);
}

std::uint64_t ticker::ticks() const noexcept {
  // relaxed: a statistic.
  return state_ ? state_->count.load(std::memory_order_relaxed) : 0;
}

}  // namespace sluice::detail
