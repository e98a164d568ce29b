// sluice/detail/fault_hook.hpp — the seam sluice::testing::stress (sluice/testing.hpp)
// uses to inject faults into a graph and to watch its stage threads.
//
// Where it is called:
//   channel ops    a channel made by a graph under stress calls on_channel_op() first
//                  thing in every push / pop (push, try_push, push_for/until, push_all,
//                  pop, try_pop, pop_for/until, pop_some), before it touches the channel:
//                  the hook may sleep (a delay) or throw (testing::injected_fault), and a
//                  throw leaves the item with the caller and the channel untouched.
//   stage threads  graph_core calls on_thread_begin/on_thread_end around each replica,
//                  on_stage_exception for every exception a stage function or its
//                  on_close let out (or that error_policy::skip dropped), on_replica_released after a replica's
//                  task (its handles and its function object: the stage's cleanup) is
//                  destroyed, and on_stage_closed once the last replica ran on_close.
//   fused calls    on_fused_begin/on_fused_end around each call of a fused stage on its
//                  host's thread, so that its channel ops are told apart from the host's.
//
// Cost when unused (every graph not under stress, every channel made by bounded()):
// channel_core<T>::fault is null; the check is one load from the channel's first cache line
// (read by every push and pop anyway: capacity, policy) and a branch predicted not taken.
// graph_core checks its own null pointer once per replica start and exit.
//
// Requires: set on a channel before any handle is shared with another thread (the graph
//   sets it while building, before start() creates the threads: thread creation is the
//   happens-before edge). The hook outlives every channel and thread that calls it.
// Guarantees: nothing here; see sluice/testing.hpp for what stress() does with it.
#pragma once

#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

namespace sluice::detail {

// Callbacks that must not throw (on_writable: watermark.hpp; on_discard: channel_core.hpp)
// run inside a nothrow_scope, which swallows what they let out. stress injects no failure
// into a push or pop made there: it would be swallowed too, and the stage whose thread ran
// the callback named as having caught it (a probe: a sink blamed for a source's push in
// its on_writable callback).
inline thread_local int t_nothrow_depth = 0;
struct nothrow_scope {
  nothrow_scope() noexcept { ++t_nothrow_depth; }
  ~nothrow_scope() { --t_nothrow_depth; }
  nothrow_scope(const nothrow_scope&) = delete;
  nothrow_scope& operator=(const nothrow_scope&) = delete;
};
[[nodiscard]] inline bool in_nothrow_callback() noexcept { return t_nothrow_depth > 0; }

class fault_hook {
 public:
  enum class op : unsigned char { push, pop };

  // First thing in a push or pop of a hooked channel, on the calling thread. May sleep;
  // may throw (the operation then never started).
  virtual void on_channel_op(op o) = 0;

  // A stage replica's thread starts running the stage / is done (after its cleanup).
  virtual void on_thread_begin(const std::string& stage, std::size_t replica) noexcept = 0;
  virtual void on_thread_end() noexcept = 0;
  // A stage function or on_close let `e` out (or error_policy::skip caught it on an item).
  // `during_teardown`: the graph was already being torn down (a cancel, a failure), so `e`
  // may be its channel's cancel cause passed on; false for on_close's exceptions.
  virtual void on_stage_exception(const std::string& stage, const std::exception_ptr& e,
                                  bool during_teardown) noexcept = 0;
  // A replica's task is destroyed: its channel handles and its copy of the stage function.
  virtual void on_replica_released(const std::string& stage) noexcept = 0;
  // The stage's last replica finished its cleanup (on_close, when it has one).
  virtual void on_stage_closed(const std::string& stage, bool has_on_close) noexcept = 0;
  // A fused stage's call begins on one of its host's threads (`replica`: the host replica),
  // which runs it as a function call (detail/graph_fuse.hpp): the channel ops until the
  // matching on_fused_end are the fused stage's, not the host's. Returns what on_fused_end
  // gets back to restore the thread's stage (fused calls nest). A hook that does not tell
  // fused stages apart keeps these defaults: their ops count as the host's.
  virtual void* on_fused_begin(const std::string& /*stage*/, std::size_t /*replica*/) noexcept { return nullptr; }
  virtual void on_fused_end(void* /*outer*/) noexcept {}

 protected:
  fault_hook() = default;
  fault_hook(const fault_hook&) = default;
  fault_hook& operator=(const fault_hook&) = default;
  ~fault_hook() = default;
};

// Reaches the channel behind a handle (sender<T>/receiver<T> befriend it) to install a
// fault hook (graph.hpp, building a graph under stress), make it a fused edge, wait for
// its late discards (the graph's destructor), or mute the graph's own sender on an edge
// (detail/counter.hpp).
struct channel_access {
  template <class Handle>
  static void set_fault_hook(Handle& h, fault_hook* hook) noexcept {
    if (h.ch_ != nullptr) h.ch_->set_fault_hook(hook);
  }
  // Disconnects the channel as its last receiver's release does (pushes fail, buffered
  // items are discarded), whatever receivers remain: the graph, once the stage that
  // consumes it has ended (a receiver it copied and kept held the producer up for ever).
  template <class Handle>
  static void disconnect(Handle& h) noexcept {
    if (h.ch_ != nullptr) h.ch_->disconnect();
  }
  // channel<T>::wait_discards(); the graph's destructor only.
  template <class Handle>
  static void wait_discards(Handle& h) noexcept {
    if (h.ch_ != nullptr) h.ch_->wait_discards();
  }
  // The graph's handle on an edge: it closes, cancels and reads stats but never pushes,
  // so it does not keep the stage's sender from being alone (detail/counter.hpp). A
  // muted handle is released with release_muted(), never by its destructor.
  template <class Handle>
  static void mute(Handle& h) noexcept {
    if (h.ch_ != nullptr) h.ch_->mute_sender();
  }
  template <class Handle>
  static void release_muted(Handle& h) noexcept {
    if (auto* ch = std::exchange(h.ch_, nullptr); ch != nullptr && ch->release_sender(true)) delete ch;
  }
  // sender::push_all of a container's elements (moved), with `went_in` following how many
  // are in: when a move throws, the caller knows which elements are moved-from shells.
  template <class Handle, class Container>
  static std::size_t push_all_counted(Handle& h, Container& items, std::size_t& went_in) {
    return h.ch("sluice::sender::push_all").template push_all<true>(items, &went_in);
  }
  // receiver::pop_some that never blocks: 0 when nothing is buffered now. For a caller
  // that times only the pops that wait (the ordered flat_map emitter).
  template <class Handle, class Out>
  static std::size_t try_pop_some(Handle& h, Out out, std::size_t max) {
    return h.ch("sluice::receiver::pop_some").try_pop_some(out, max);
  }
  // Does the handle's side count one handle that may operate (the lone-side path)? Tests.
  template <class Handle>
  [[nodiscard]] static bool sender_alone(const Handle& h) noexcept {
    return h.ch_ != nullptr && h.ch_->sender_alone();
  }
  template <class Handle>
  [[nodiscard]] static bool receiver_alone(const Handle& h) noexcept {
    return h.ch_ != nullptr && h.ch_->receiver_alone();
  }
  // bounded(), but the ring is made by make_storage() (channel<T>'s ring_later); graph
  // builders only, for their edges. Handles: std::pair<sender<T>, receiver<T>>.
  template <class Handles, class Options>
  static Handles bounded_ring_later(Options o) {
    using tx_t = typename Handles::first_type;
    using rx_t = typename Handles::second_type;
    using channel_t = std::remove_pointer_t<decltype(std::declval<tx_t&>().ch_)>;
    auto* ch = new channel_t(std::move(o), typename channel_t::ring_later_t{});
    return Handles(tx_t(ch), rx_t(ch));
  }
  // Gives the handle's edge its ring (channel<T>::make_storage); graph builders only.
  template <class Handle>
  static void make_storage(Handle& h) {
    if (h.ch_ != nullptr) h.ch_->make_storage();
  }
  // Makes the handle's channel a fused edge (detail/direct_flavour.hpp); graph builders only.
  template <class Handle, class Target>
  static void make_direct(Handle& h, std::shared_ptr<Target> t) {
    if (h.ch_ != nullptr) h.ch_->make_direct(std::move(t));
  }
};

}  // namespace sluice::detail
