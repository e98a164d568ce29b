// sluice/supervisor.hpp — how a stage graph ends: the errors run()/wait() throw, the
// dead letters handed to on_discard, the report of a run, and graph_options, the
// supervisor's settings and hooks. Included by sluice/graph.hpp.
//
//   sluice::graph g({.teardown_deadline = std::chrono::seconds(2),
//                    .on_discard = [&](const sluice::dead_letter& d) { ++lost; }});
//   try {
//     sluice::report r = g.run();
//     std::printf("%zu stalls, balanced: %d\n", r.stalls, int(r.balanced()));
//   } catch (const sluice::stage_error& e) {
//     std::fprintf(stderr, "stage %s failed (%zu later failures)\n", e.stage().c_str(), e.suppressed());
//     std::rethrow_exception(e.cause());          // the stage's own exception
//   } catch (const sluice::cancelled&) {
//     // g.cancel() was called
//   }
//
// Requires: nothing; these are plain value and exception types. The hooks in
//   graph_options must not throw (what each may call is said on the field).
// Guarantees: the first exception thrown by any stage fails the graph;
//   run()/wait() throw stage_error only after every channel was cancelled, every stop
//   token requested, every stage's cleanup run and every thread joined. Later failures
//   (including those caused by the teardown itself) are only counted in suppressed().
//   cancel() is not a stage failure: run()/wait() then throw sluice::cancelled.
// Non-guarantees: which of two stages that fail at the same instant is "first" is
//   decided by whichever reaches the supervisor's record first.
// Lifetime: stage_error holds the cause by std::exception_ptr (shared ownership), so
//   it may outlive the graph. A dead_letter is a view, valid only during on_discard.
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include "sluice/metrics.hpp"

namespace sluice {

namespace detail {
// What `cause` says: its what(); a thrown C string's or std::string's text; else its
// type ("an exception of type 'int', not caught as a std::exception").
std::string describe_exception(const std::exception_ptr& cause);
// "sluice: stage 'parse' failed: <describe_exception(cause)>".
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

// An item that never reached its consumer (dead letter): buffered in a channel when the
// graph was torn down or its consumer finished early, or produced by a stage after its
// output had ended. A view, valid only during the on_discard call; the hook may move
// the item out:
//
//   sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
//     if (auto* s = d.get<std::string>()) lost.push_back(std::move(*s));
//   }});
//
// Works for move-only item types (nothing is copied, nothing is allocated).
//
// An item whose stage function threw is a dead letter too (whatever the stage's error
// policy: skip drops it, restart drops it and renews the function, stop fails the graph):
// error() is the exception, stage() the stage that threw, channel() the channel it was
// popped from. The item is the one the stage was given; a function that takes a
// move-only item by value may have moved from it.
class dead_letter {
 public:
  dead_letter(std::string_view channel, const std::type_info& type, void* item, std::string_view stage = {},
              std::exception_ptr error = nullptr) noexcept
      : channel_(channel), stage_(stage), type_(&type), item_(item), error_(std::move(error)) {}

  // The channel the item was in (or was being pushed to): "<producer> -> <consumer>"
  // (with " #2", " #3", ... for the second and later channels between the same two stages).
  [[nodiscard]] std::string_view channel() const noexcept { return channel_; }
  // The stage that dropped it (its function threw), or for other dead letters the stage
  // the item was bound for (the channel's consumer).
  [[nodiscard]] std::string_view stage() const noexcept { return stage_; }
  // The exception that dropped it; null for other dead letters.
  [[nodiscard]] const std::exception_ptr& error() const noexcept { return error_; }
  // The item's type.
  [[nodiscard]] const std::type_info& type() const noexcept { return *type_; }
  // The item, if it is a T; nullptr otherwise.
  template <class T>
  [[nodiscard]] T* get() const noexcept {
    return *type_ == typeid(T) ? static_cast<T*>(item_) : nullptr;
  }

 private:
  std::string_view channel_;
  std::string_view stage_;
  const std::type_info* type_;
  void* item_;
  std::exception_ptr error_;
};

struct report;

// Settings and hooks of one graph. An aggregate; fields in this order.
struct graph_options {
  // After a failure or cancel(), how long stages get to exit before they are named
  // stuck (to on_stuck and in the report). run() still joins every thread. After
  // request_stop(), how long the sources get (a source that ignores its stop token kept
  // the run going for ever, silently): those still running then (or the stages fused
  // onto them, whose calls they are in), unless parked in a push (held up downstream),
  // are named the same way, and the run goes on until they return; a stage so named that
  // then ends is "done" in the report, not "stuck". Above zero (the graph's constructor throws
  // std::invalid_argument otherwise).
  std::chrono::steady_clock::duration teardown_deadline = std::chrono::seconds(5);
  // No item moved on any channel for this long while some stage waits on a channel:
  // a stall, reported with its wait-for chain. Zero turns the watchdog off; negative is
  // std::invalid_argument.
  std::chrono::steady_clock::duration stall_threshold = std::chrono::seconds(10);
  // Receives every undelivered item (see dead_letter). Calls are serialised by the
  // graph but come from stage threads or the thread that cancels; must not throw. It may
  // call the graph's cancel() or request_stop() (say, on the first dead letter of a run
  // that must lose nothing): the graph's supervisor thread acts on them once the hook
  // has returned. It must not call anything else of the graph.
  std::function<void(const dead_letter&)> on_discard = {};
  // Called once per stage that has not exited by the teardown deadline, on the graph's
  // supervisor thread (and once per source, or stage fused onto one, still running a
  // teardown deadline after request_stop(): a stage may so be told twice, if a failure
  // follows). It may release whatever the stage is stuck on. Without this hook the
  // graph writes one line to stderr at the deadline instead, naming each stuck stage and
  // where it is (in its stage function, blocked in a push or pop on which channel, handing
  // undelivered items to on_discard, or in its cleanup), so a run never hangs silently.
  std::function<void(const std::string& stage)> on_stuck = {};
  // Called (on the graph's supervisor thread) once per stall with its wait-for chain: the
  // first link's stage waits on a channel held up by its holder, which waits on the next
  // link's channel, ..., and the last holder is not waiting on any channel. It may call
  // cancel(); the run's end waits for it to return, so it should not block.
  std::function<void(const std::vector<metrics::wait_link>& chain)> on_stall = {};
  // Called once when the run has ended and every stage thread is joined, with the report
  // and what wait() throws (null for a normal end): a server learns that its graph ended
  // without a thread blocked in wait(). Runs on the graph's supervisor thread (on the
  // thread in start() when no stage could start), before wait()/wait_for() return. Must
  // not throw or destroy the graph (signal a thread that does); wait()/wait_for() from it
  // (or from any hook or stage of the graph) throw std::logic_error, as they would wait
  // for themselves. snapshot(), last_report() and done() (still false) are fine.
  std::function<void(const report&, std::exception_ptr)> on_done = {};
};

// What a run did (returned by run()/wait(); after a throw, graph::last_report()).
struct report {
  sluice::metrics::snapshot metrics;                 // final counters; bottleneck named
  std::vector<std::string> stuck;                    // stages past the teardown deadline (each once)
  std::vector<sluice::metrics::wait_link> stall;     // last stall's wait-for chain, if any
  std::size_t stalls = 0;                            // how many stalls were detected
  std::chrono::nanoseconds elapsed{0};               // start to the last thread joined

  // Nothing lost silently: every channel has pushed == popped + discarded and is empty.
  // External channels (a jetstream:<stream> edge) are not counted: what waits in a
  // durable stream is not lost, and their counters are the other process's too.
  [[nodiscard]] bool balanced() const noexcept {
    for (const auto& c : metrics.channels) {
      if (!c.external && !c.balanced()) return false;
    }
    return true;
  }
};

}  // namespace sluice
