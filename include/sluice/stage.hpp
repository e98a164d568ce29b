// sluice/stage.hpp — what a stage is: its options, its error policy, and the stage
// descriptors that sluice::pipeline(...) strings together.
//
//   sluice::pipeline(sluice::from<int>([](sluice::sender<int>& out) { for (int i = 0; i < 9; ++i) out.push(i); }),
//                    sluice::transform([](int v) { return v * 2; }, {.name = "double"}),
//                    sluice::keep_if([](const int& v) { return v % 3 == 0; }),
//                    sluice::into([](int v) { std::printf("%d\n", v); }))
//       .run();
//
// Each descriptor is a plain value holding the stage function and its stage_options;
// graph.hpp turns it into a stage on a thread. Stage functions may take a
// std::stop_token as their last parameter.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

namespace sluice {

// restart{max, within, backoff}: run a fresh copy of the stage function after a
// failure; more than `max` restarts inside `within` fails the graph with the last
// error (an Erlang supervisor's intensity limit); within must be above 0 and backoff not
// negative (std::invalid_argument when the stage is added). `backoff` is slept before each restart;
// request_stop() cuts short one in progress and none is slept after it (a graceful stop
// drains at once; a stage that keeps failing then meets its limit), teardown cuts any.
// Replicas: with ordered output (the default), the results of the failed replica's batch
// and of every later item wait until that batch resumes after the backoff (the order is
// kept); unordered replicas go on meanwhile, the failed one's finished results too.
struct restart {
  std::size_t max = 3;
  std::chrono::steady_clock::duration within = std::chrono::seconds(5);
  std::chrono::steady_clock::duration backoff = std::chrono::milliseconds(10);
};

// What a stage's failure does.
//   error_policy::stop      fail the graph (the default)
//   error_policy::skip      count and drop the failing item (a source or `stage` stops)
//   restart{...}            restart the stage function, within limits
class error_policy {
 public:
  enum class kind { stop, skip, restart };
  using restart = sluice::restart;

  static const error_policy stop;
  static const error_policy skip;

  constexpr error_policy(sluice::restart r) noexcept : kind_(kind::restart), limits_(r) {}  // NOLINT: implicit on purpose

  [[nodiscard]] constexpr kind what() const noexcept { return kind_; }
  [[nodiscard]] constexpr const sluice::restart& limits() const noexcept { return limits_; }
  // Equal when the kinds are, and for restart the limits too (it compared the kinds only:
  // restart{1, 1s} == restart{100, 1h}).
  friend constexpr bool operator==(const error_policy& a, const error_policy& b) noexcept {
    if (a.kind_ != b.kind_) return false;
    if (a.kind_ != kind::restart) return true;
    return a.limits_.max == b.limits_.max && a.limits_.within == b.limits_.within &&
           a.limits_.backoff == b.limits_.backoff;
  }

 private:
  constexpr explicit error_policy(kind k) noexcept : kind_(k) {}
  kind kind_ = kind::stop;
  sluice::restart limits_{};
};
inline constexpr error_policy error_policy::stop{error_policy::kind::stop};
inline constexpr error_policy error_policy::skip{error_policy::kind::skip};

// Options of one stage. An aggregate; fields in this order.
struct stage_options {
  std::size_t capacity = 1024;      // of the stage's output channel (weight units for weighted items)
  std::size_t replicas = 1;         // threads running the stage function on one input (1 to 65,536)
  bool ordered = true;              // replicas emit in input order
  error_policy on_error = error_policy::stop;
  std::string name = {};            // pipeline() descriptors only (graph methods take a name)
  // Cleanup, run once when the stage ends, however it ends. A stage that never ran (its
  // graph was never started, or start() failed) does not end, and runs none; its function
  // objects are destroyed with the graph, as ever.
  std::function<void()> on_close = {};
  // Run on the upstream stage's thread (no channel between them). Behind ordered replicas
  // that is the thread emitting in order, one batch at a time: the fused stage then gets
  // one thread's throughput, not the replicas' (unordered replicas each run it).
  bool fuse = false;
};

// Channel weighing for item types that carry bytes. Specialise channel_traits<T> with
// `static constexpr bool weighted = true;` and `static std::size_t weigh(const T&)`; a
// stage whose output is such a T gets a channel budgeted in weight units (bytes).
template <class T>
struct channel_traits {
  static constexpr bool weighted = false;
};

// ---- pipeline descriptors -------------------------------------------------------
// A source: f(sender<T>&[, std::stop_token]).
template <class T, class F>
struct source_stage {
  using output_type = T;
  F fn;
  stage_options options;
};
// map: U f(T).
template <class F>
struct transform_stage {
  F fn;
  stage_options options;
};
// filter: bool pred(const T&).
template <class F>
struct keep_if_stage {
  F fn;
  stage_options options;
};
// flat_map: f(T, sender<U>&[, stop_token]).
template <class U, class F>
struct expand_stage {
  using output_type = U;
  F fn;
  stage_options options;
};
// stage: f(receiver<T>&, sender<U>&[, stop_token]) — the whole input stream at once.
template <class U, class F>
struct through_stage {
  using output_type = U;
  F fn;
  stage_options options;
};
// sink: f(T) (returning bool: false stops early).
template <class F>
struct into_stage {
  F fn;
  stage_options options;
};
// sink over the whole input: f(receiver<T>&[, stop_token]). The function sees how its
// input ended (rx.done() after a close, rx.cancelled() after an abort), which is what a
// file writer needs to commit or throw away its output.
template <class F>
struct consume_stage {
  F fn;
  stage_options options;
};

template <class T, class F>
source_stage<T, std::decay_t<F>> from(F&& f, stage_options o = {}) {
  return {std::forward<F>(f), std::move(o)};
}
template <class F>
transform_stage<std::decay_t<F>> transform(F&& f, stage_options o = {}) {
  return {std::forward<F>(f), std::move(o)};
}
template <class F>
keep_if_stage<std::decay_t<F>> keep_if(F&& f, stage_options o = {}) {
  return {std::forward<F>(f), std::move(o)};
}
template <class U, class F>
expand_stage<U, std::decay_t<F>> expand(F&& f, stage_options o = {}) {
  return {std::forward<F>(f), std::move(o)};
}
template <class U, class F>
through_stage<U, std::decay_t<F>> through(F&& f, stage_options o = {}) {
  return {std::forward<F>(f), std::move(o)};
}
template <class F>
into_stage<std::decay_t<F>> into(F&& f, stage_options o = {}) {
  return {std::forward<F>(f), std::move(o)};
}
template <class F>
consume_stage<std::decay_t<F>> consume(F&& f, stage_options o = {}) {
  return {std::forward<F>(f), std::move(o)};
}

}  // namespace sluice
