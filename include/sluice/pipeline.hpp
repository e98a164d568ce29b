// sluice/pipeline.hpp — the linear shorthand: a source, stages, a sink, in one line.
//
//   sluice::report r =
//       sluice::pipeline(sluice::from<int>([](sluice::sender<int>& out) { for (int i = 0; i < 9; ++i) out.push(i); }),
//                        sluice::transform([](int v) { return v * 2; }, {.name = "double"}),
//                        sluice::keep_if([](const int& v) { return v % 3 == 0; }),
//                        sluice::into([](int v) { std::printf("%d\n", v); }))
//           .run();
//
// Like Node's `await pipeline(createReadStream(a), createGzip(), createWriteStream(b))`.
// The descriptors (stage.hpp) become graph stages: from -> source, transform -> map,
// keep_if -> filter, expand -> flat_map, through -> stage, into -> sink, consume ->
// consume; io:: stages are descriptors of the same kinds.
//
// Requires: the first descriptor is a source, the last a sink (into/consume), and each
//   stage takes the output type of the one before it. All of this is checked at compile
//   time; a mismatch reads, for example,
//     "sluice::pipeline: stage 2 (transform) cannot take the output type of stage 1"
//   (stages are counted from 1; past stage 16 the message gives no number, the
//   instantiation context does).
// Guarantees: exactly those of sluice::graph (graph.hpp); the pipeline owns its graph.
//   A descriptor's stage_options.name names its stage; unnamed stages are called
//   "<kind>#<position>", e.g. "transform#2".
// Non-guarantees: no branching (use sluice::graph for broadcast/merge/partition).
// Lifetime: the pipeline object owns the graph; run() once.
// add_pipeline(g, ...) adds the same chain to a graph of the caller's (below), for
// sluice::testing::stress() and for graphs with more than one chain.
#pragma once

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "sluice/graph.hpp"
#include "sluice/stage.hpp"

namespace sluice {
namespace detail {

struct pipe_start {};  // before the first stage
struct pipe_ended {};  // after a sink
struct pipe_error {};  // after a stage that did not fit (already reported)

// One static_assert per position, so the message can say which stage does not fit.
#define SLUICE_PIPE_FIT(N, P, KIND) \
  static_assert(Index != N || Fits, "sluice::pipeline: stage " #N " (" KIND ") cannot take the output type of stage " #P);
#define SLUICE_PIPE_FITS(KIND)                                                                             \
  SLUICE_PIPE_FIT(2, 1, KIND)                                                                              \
  SLUICE_PIPE_FIT(3, 2, KIND)                                                                              \
  SLUICE_PIPE_FIT(4, 3, KIND)                                                                              \
  SLUICE_PIPE_FIT(5, 4, KIND)                                                                              \
  SLUICE_PIPE_FIT(6, 5, KIND)                                                                              \
  SLUICE_PIPE_FIT(7, 6, KIND)                                                                              \
  SLUICE_PIPE_FIT(8, 7, KIND)                                                                              \
  SLUICE_PIPE_FIT(9, 8, KIND)                                                                              \
  SLUICE_PIPE_FIT(10, 9, KIND)                                                                             \
  SLUICE_PIPE_FIT(11, 10, KIND)                                                                            \
  SLUICE_PIPE_FIT(12, 11, KIND)                                                                            \
  SLUICE_PIPE_FIT(13, 12, KIND)                                                                            \
  SLUICE_PIPE_FIT(14, 13, KIND)                                                                            \
  SLUICE_PIPE_FIT(15, 14, KIND)                                                                            \
  SLUICE_PIPE_FIT(16, 15, KIND)                                                                            \
  static_assert(Index <= 16 || Fits,                                                                       \
                "sluice::pipeline: a " KIND " stage cannot take the output type of the stage before it");

template <std::size_t Index, bool Fits>
struct fit_transform {
  SLUICE_PIPE_FITS("transform")
};
template <std::size_t Index, bool Fits>
struct fit_keep_if {
  SLUICE_PIPE_FITS("keep_if")
};
template <std::size_t Index, bool Fits>
struct fit_expand {
  SLUICE_PIPE_FITS("expand")
};
template <std::size_t Index, bool Fits>
struct fit_through {
  SLUICE_PIPE_FITS("through")
};
template <std::size_t Index, bool Fits>
struct fit_into {
  SLUICE_PIPE_FITS("into")
};
template <std::size_t Index, bool Fits>
struct fit_consume {
  SLUICE_PIPE_FITS("consume")
};
#undef SLUICE_PIPE_FITS
#undef SLUICE_PIPE_FIT

template <class>
inline constexpr bool always_false_v = false;

template <std::size_t Index>
std::string pipe_stage_name(const stage_options& o, const char* kind) {
  return o.name.empty() ? std::string(kind) + "#" + std::to_string(Index) : o.name;
}

// ---- one step: add descriptor D (position Index, counted from 1) after `in` --------

// The first stage: only a source fits.
template <std::size_t Index, class T, class F>
stream<T> pipe_add(graph& g, pipe_start, source_stage<T, F>&& d) {
  static_assert(callable_v<F, sender<T>&>,
                "sluice::pipeline: the source function must be callable as f(sluice::sender<T>&) "
                "(or with a trailing std::stop_token)");
  auto name = pipe_stage_name<Index>(d.options, "from");
  return g.source<T>(std::move(name), std::move(d.fn), std::move(d.options));
}
template <std::size_t Index, class D>
pipe_error pipe_add(graph&, pipe_start, D&&) {
  static_assert(always_false_v<D>,
                "sluice::pipeline: stage 1 must be a source (sluice::from<T>(f) or an io:: reader)");
  return {};
}
// A source after the first stage.
template <std::size_t Index, class In, class T, class F>
pipe_error pipe_add(graph&, stream<In>, source_stage<T, F>&&) {
  static_assert(always_false_v<F>, "sluice::pipeline: only the first stage may be a source (from<T>)");
  return {};
}
// Anything after a sink.
template <std::size_t Index, class D>
pipe_error pipe_add(graph&, pipe_ended, D&&) {
  static_assert(always_false_v<D>, "sluice::pipeline: a sink (into/consume) must be the last stage");
  return {};
}
// After an error: report nothing more.
template <std::size_t Index, class D>
pipe_error pipe_add(graph&, pipe_error, D&&) {
  return {};
}

template <std::size_t Index, class T, class F>
auto pipe_add(graph& g, stream<T> in, transform_stage<F>&& d) {
  constexpr bool fits = callable_v<F, T&&>;
  (void)fit_transform<Index, fits>{};
  if constexpr (fits) {
    static_assert(!std::is_void_v<stage_result_t<F, T&&>>,
                  "sluice::pipeline: a transform function returns void; use into(f) for a sink");
    auto name = pipe_stage_name<Index>(d.options, "transform");
    return g.map(std::move(name), in, std::move(d.fn), std::move(d.options));
  } else {
    return pipe_error{};
  }
}

template <std::size_t Index, class T, class F>
auto pipe_add(graph& g, stream<T> in, keep_if_stage<F>&& d) {
  constexpr bool fits = callable_v<F, const T&>;
  (void)fit_keep_if<Index, fits>{};
  if constexpr (fits) {
    auto name = pipe_stage_name<Index>(d.options, "keep_if");
    return g.filter(std::move(name), in, std::move(d.fn), std::move(d.options));
  } else {
    return pipe_error{};
  }
}

template <std::size_t Index, class T, class U, class F>
auto pipe_add(graph& g, stream<T> in, expand_stage<U, F>&& d) {
  constexpr bool fits = callable_v<F, T&&, sender<U>&>;
  (void)fit_expand<Index, fits>{};
  if constexpr (fits) {
    auto name = pipe_stage_name<Index>(d.options, "expand");
    return g.flat_map<U>(std::move(name), in, std::move(d.fn), std::move(d.options));
  } else {
    return pipe_error{};
  }
}

template <std::size_t Index, class T, class U, class F>
auto pipe_add(graph& g, stream<T> in, through_stage<U, F>&& d) {
  constexpr bool fits = callable_v<F, receiver<T>&, sender<U>&>;
  (void)fit_through<Index, fits>{};
  if constexpr (fits) {
    auto name = pipe_stage_name<Index>(d.options, "through");
    return g.stage<U>(std::move(name), in, std::move(d.fn), std::move(d.options));
  } else {
    return pipe_error{};
  }
}

template <std::size_t Index, class T, class F>
auto pipe_add(graph& g, stream<T> in, into_stage<F>&& d) {
  constexpr bool fits = callable_v<F, T&&>;
  (void)fit_into<Index, fits>{};
  if constexpr (fits) {
    auto name = pipe_stage_name<Index>(d.options, "into");
    g.sink(std::move(name), in, std::move(d.fn), std::move(d.options));
    return pipe_ended{};
  } else {
    return pipe_error{};
  }
}

template <std::size_t Index, class T, class F>
auto pipe_add(graph& g, stream<T> in, consume_stage<F>&& d) {
  constexpr bool fits = callable_v<F, receiver<T>&>;
  (void)fit_consume<Index, fits>{};
  if constexpr (fits) {
    auto name = pipe_stage_name<Index>(d.options, "consume");
    g.consume(std::move(name), in, std::move(d.fn), std::move(d.options));
    return pipe_ended{};
  } else {
    return pipe_error{};
  }
}

template <std::size_t Index, class In>
void pipe_build(graph&, In) {
  static_assert(std::is_same_v<In, pipe_ended> || std::is_same_v<In, pipe_error>,
                "sluice::pipeline: the last stage must be a sink (sluice::into(f), sluice::consume(f) "
                "or an io:: writer)");
}
template <std::size_t Index, class In, class D, class... Rest>
void pipe_build(graph& g, In in, D&& d, Rest&&... rest) {
  auto next = pipe_add<Index>(g, in, std::forward<D>(d));
  pipe_build<Index + 1>(g, next, std::forward<Rest>(rest)...);
}

template <class T>
inline constexpr bool is_graph_options_v = std::is_same_v<std::remove_cvref_t<T>, graph_options>;

}  // namespace detail

// Adds the linear chain `ds...` (a source, stages, a sink: what pipeline() takes, checked
// the same way at compile time) to `g` as stages of g. For a graph built elsewhere, such
// as the builder sluice::testing::stress() calls for every run (testing.hpp):
//
//   sluice::testing::stress([](sluice::graph& g) {
//     sluice::add_pipeline(g, sluice::from<int>(numbers), sluice::transform(parse), sluice::into(store));
//   }, o);
//
// Unnamed stages get pipeline()'s names ("transform#2"); a second unnamed chain in the
// same graph repeats them, and g throws std::logic_error ("two stages are named ...")
// from this call. Throws what the graph's stage-adding members throw (a stage added after
// start(), a bad capacity); the stages added before the throw stay in g.
template <class... Ds>
void add_pipeline(graph& g, Ds&&... ds) {
  static_assert(sizeof...(Ds) >= 2, "sluice::add_pipeline: needs at least a source and a sink");
  detail::pipe_build<1>(g, detail::pipe_start{}, std::decay_t<Ds>(std::forward<Ds>(ds))...);
}

// A linear graph built from stage descriptors; run() runs it (once).
class pipeline {
 public:
  template <class First, class... Rest>
    requires(!detail::is_graph_options_v<First>)
  explicit pipeline(First&& first, Rest&&... rest) : pipeline(graph_options{}, std::forward<First>(first),
                                                               std::forward<Rest>(rest)...) {}
  template <class... Ds>
  explicit pipeline(graph_options o, Ds&&... ds) : graph_(std::make_unique<graph>(std::move(o))) {
    static_assert(sizeof...(Ds) >= 2, "sluice::pipeline: needs at least a source and a sink");
    add_pipeline(*graph_, std::forward<Ds>(ds)...);
  }

  // A moved-from pipeline: every member throws std::logic_error, as a moved-from graph's.
  report run() { return live().run(); }
  void start() { live().start(); }
  report wait() { return live().wait(); }
  void request_stop() { live().request_stop(); }
  void cancel() { live().cancel(); }
  [[nodiscard]] metrics::snapshot snapshot() const { return live().snapshot(); }
  [[nodiscard]] report last_report() const { return live().last_report(); }
  // The graph behind it (for hooks that need it, e.g. cancel() from a callback).
  [[nodiscard]] sluice::graph& get_graph() { return live(); }

 private:
  [[nodiscard]] graph& live() const {
    if (!graph_) throw std::logic_error("sluice::pipeline: used after it was moved from");
    return *graph_;
  }
  std::unique_ptr<graph> graph_;
};

}  // namespace sluice
