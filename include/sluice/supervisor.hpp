// sluice/supervisor.hpp — how a stage graph fails: the errors run()/wait() throw, and
// the supervisor's first-failure-wins record.
//
//   try {
//     g.run();
//   } catch (const sluice::stage_error& e) {
//     std::fprintf(stderr, "stage %s failed (%zu later failures)\n", e.stage().c_str(), e.suppressed());
//     std::rethrow_exception(e.cause());          // the stage's own exception
//   } catch (const sluice::cancelled&) {
//     // g.cancel() was called
//   }
//
// Requires: nothing; these are plain exception types.
// Guarantees (DESIGN.md §3): the first exception thrown by any stage fails the graph;
//   run()/wait() throw stage_error only after every channel was cancelled, every stop
//   token requested, every stage's cleanup run and every thread joined. Later failures
//   (including those caused by the teardown itself) are only counted in suppressed().
//   cancel() is not a stage failure: run()/wait() then throw sluice::cancelled.
// Non-guarantees: which of two stages that fail at the same instant is "first" is
//   decided by whichever reaches the record first.
// Lifetime: stage_error holds the cause by std::exception_ptr (shared ownership), so
//   it may outlive the graph.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>

namespace sluice {

namespace detail {
// "stage 'parse' failed: <cause's what()>".
std::string describe_failure(const std::string& stage, const std::exception_ptr& cause);
}  // namespace detail

// The graph failed because stage `stage()` threw `cause()`.
class stage_error : public std::runtime_error {
 public:
  stage_error(std::string stage, std::exception_ptr cause, std::size_t suppressed)
      : std::runtime_error(detail::describe_failure(stage, cause)),
        stage_(std::move(stage)),
        cause_(std::move(cause)),
        suppressed_(suppressed) {}

  // The name of the stage whose exception failed the graph.
  [[nodiscard]] const std::string& stage() const noexcept { return stage_; }
  // The stage's original exception (rethrow it with std::rethrow_exception).
  [[nodiscard]] std::exception_ptr cause() const noexcept { return cause_; }
  // How many later stage failures there were (during or after the teardown).
  [[nodiscard]] std::size_t suppressed() const noexcept { return suppressed_; }

 private:
  std::string stage_;
  std::exception_ptr cause_;
  std::size_t suppressed_;
};

// The graph was cancelled (graph::cancel()); no stage failed first.
class cancelled : public std::runtime_error {
 public:
  explicit cancelled(std::size_t suppressed = 0)
      : std::runtime_error("sluice: graph cancelled"), suppressed_(suppressed) {}
  // Stage failures after the cancel (for instance stages that threw on a cancelled input).
  [[nodiscard]] std::size_t suppressed() const noexcept { return suppressed_; }

 private:
  std::size_t suppressed_;
};

namespace detail {

// The supervisor's record of how a run ends: the first failure (or the cancel) wins,
// every later failure is only counted.
//
// Requires: claim_*() from any thread. stage()/cause() only after a happens-before
//   edge with the winner (the graph reads them after joining every stage thread, or
//   after taking the mutex the winner's teardown released).
// Guarantees: exactly one claim_*() call returns true per record.
class failure_record {
 public:
  enum class outcome : std::uint32_t { none = 0, failed = 1, cancelled = 2 };

  // A stage threw. True when this is the first failure (the caller then tears down).
  bool claim_failure(std::string stage, std::exception_ptr cause) noexcept {
    if (!claim(outcome::failed)) {
      // relaxed: a pure counter, read after the threads are joined.
      suppressed_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    stage_ = std::move(stage);  // nothrow: std::string move
    cause_ = std::move(cause);
    return true;
  }
  // cancel() was called. True when nothing had failed or been cancelled yet.
  bool claim_cancel() noexcept { return claim(outcome::cancelled); }

  [[nodiscard]] outcome what() const noexcept {
    // acquire: pairs with the acq_rel claim; the caller still needs the happens-before
    // edge described above before it reads stage()/cause().
    return static_cast<outcome>(state_.load(std::memory_order_acquire));
  }
  [[nodiscard]] bool decided() const noexcept { return what() != outcome::none; }
  [[nodiscard]] const std::string& stage() const noexcept { return stage_; }
  [[nodiscard]] const std::exception_ptr& cause() const noexcept { return cause_; }
  [[nodiscard]] std::size_t suppressed() const noexcept {
    return suppressed_.load(std::memory_order_relaxed);
  }

 private:
  bool claim(outcome o) noexcept {
    std::uint32_t expected = 0;
    // acq_rel: the winner is decided exactly once (STYLE: "a fetch_or flag stores the
    // exception once"); a loser's failure is counted, never stored.
    return state_.compare_exchange_strong(expected, static_cast<std::uint32_t>(o),
                                          std::memory_order_acq_rel);
  }

  std::atomic<std::uint32_t> state_{0};  // outcome
  std::atomic<std::size_t> suppressed_{0};
  std::string stage_;           // written once by the winner of claim_failure
  std::exception_ptr cause_;    // idem
};

}  // namespace detail
}  // namespace sluice
