// sluice::testing::stress / replay (sluice/testing.hpp, DESIGN.md §8): one run_engine per
// run is the graph's fault hook (detail/fault_hook.hpp): it decides every channel
// operation's fault from the run seed, fires the run's one cancel() or request_stop(),
// and records what the stage threads report; check_run() is the oracle.
#include "sluice/testing.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iomanip>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "sluice/detail/fault_hook.hpp"
#include "sluice/graph.hpp"
#include "sluice/supervisor.hpp"

namespace sluice::testing {

injected_fault::injected_fault(std::string stage, std::string op, std::uint64_t op_index, std::uint64_t serial)
    : std::runtime_error("sluice::testing: injected fault in stage '" + stage + "' (its " + op + " #" +
                         std::to_string(op_index) + ")"),
      stage_(std::move(stage)),
      op_(std::move(op)),
      op_index_(op_index),
      serial_(serial) {}

namespace {

using clock = std::chrono::steady_clock;

std::uint64_t mix(std::uint64_t a, std::uint64_t b) noexcept {
  std::uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
std::uint64_t hash_name(const std::string& s) noexcept {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a: the same in every build
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}
double unit(std::uint64_t r) noexcept { return static_cast<double>(r >> 11) * 0x1.0p-53; }

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}
// "250 ms"; under a millisecond "500 us" (a deadline of 500 us is not "0 ms").
std::string ms_text(clock::duration d) {
  if (d > clock::duration::zero() && d < std::chrono::microseconds(1)) {  // a 1 ns deadline said "0 us"
    return std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()) + " ns";
  }
  if (d > clock::duration::zero() && d < std::chrono::milliseconds(1)) {
    return std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(d).count()) + " us";
  }
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

// The threads of this process: id -> name (/proc/self/task/<tid>/comm).
std::map<long, std::string> list_threads() {
  std::map<long, std::string> out;
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const long tid = std::strtol(e->d_name, nullptr, 10);
    std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string name;
    std::getline(f, name);
    out.emplace(tid, name);
  }
  ::closedir(d);
  return out;
}

// What an exception says, as a stage_error says it (a null what(), a thrown string's text,
// another type's name): describe() returned what() unchecked, and a null one threw out of
// stress() ("basic_string: construction from null"), losing the report.
std::string describe(const std::exception_ptr& e) { return sluice::detail::describe_exception(e); }

enum class control { none, cancel, stop };


// One stage replica's thread: its decision stream and how many channel ops it made.
struct thread_ctx {
  class run_engine* owner = nullptr;
  std::string stage;
  std::uint64_t stream = 0;  // from (run seed, stage, replica)
  std::uint64_t ops = 0;
  // The serial of the injected fault this thread threw last, until its next channel op:
  // a thread that ends with it still set ended after the fault (the stage's right), where
  // one that made another op went on.
  std::uint64_t last_fault = 0;
  // A stage thread's own context keeps one per fused stage it runs (on_fused_begin), each
  // with the decision stream of that stage and this replica, as if it had its own thread.
  std::vector<std::unique_ptr<thread_ctx>> fused;
};
thread_local thread_ctx* t_ctx = nullptr;
// The stage thread's own context (t_ctx is a fused stage's during its calls).
thread_local thread_ctx* t_root = nullptr;

struct stage_rec {
  std::size_t begun = 0, ended = 0, released = 0, closed = 0;
  std::set<std::size_t> replicas;
};

class run_engine final : public detail::fault_hook {
 public:
  run_engine(std::uint64_t seed, const stress_options& o) : seed_(seed), o_(o) {
    const std::uint64_t c = mix(seed, 0xC0117);
    const double u = unit(c);
    if (u < o.cancel_probability) {
      control_ = control::cancel;
    } else if (u < o.cancel_probability + o.stop_probability) {
      control_ = control::stop;
    }
    control_at_ = 1 + mix(c, 1) % 400;  // after this many channel ops of the whole graph
  }

  void attach(sluice::graph& g) { graph_ = &g; }

  // ---- fault_hook --------------------------------------------------------------------
  void on_channel_op(op o) override {
    thread_ctx* c = t_ctx;
    if (c == nullptr || c->owner != this) return;  // not a stage thread of this run
    c->last_fault = 0;
    const std::uint64_t k = ++c->ops;
    // relaxed: a count; the moment it names is as random as the interleaving anyway.
    if (control_ != control::none && ops_.fetch_add(1, std::memory_order_relaxed) + 1 == control_at_) fire_control();
    const std::uint64_t r = mix(c->stream, k);
    const double u = unit(r);
    // Nothing more is injected once the run was asked to end (its cancel or stop, or
    // stress's closing stop, or a failure's teardown). A failure then would end a run that
    // a stage holds up and hide it; delays would add up: a drain of a few dozen operations
    // each stalled up to max_delay outlasted the deadline, and a stage that keeps to its
    // stop token was named as ignoring it.
    const bool ending = fired_.load(std::memory_order_relaxed) || stopped_.load(std::memory_order_relaxed) ||
                        (graph_ != nullptr && detail::graph_access::core(*graph_).tearing_down());
    if (ending) return;
    // A push or pop made while this thread unwinds (a destructor or scope guard that
    // flushes what it held, after an earlier fault left the stage function): an exception
    // thrown there would reach std::terminate, and no report would come back (a probe:
    // a batcher's flushing guard, abort in run 25). Delays still apply.
    if (u < o_.fail_probability && std::uncaught_exceptions() > 0) return;
    // The same inside a callback that must not throw (on_writable, on_discard): the
    // channel swallows what it lets out, so the fault would be lost, and the stage whose
    // thread ran the callback named as one that caught an injected_fault and went on.
    if (u < o_.fail_probability && detail::in_nothrow_callback()) return;
    if (u < o_.fail_probability) {
      const std::uint64_t serial = serial_.fetch_add(1, std::memory_order_relaxed) + 1;
      {
        std::lock_guard lk(mu_);
        thrown_.emplace(serial, c->stage);
      }
      failures_.fetch_add(1, std::memory_order_relaxed);
      mark_fault();
      c->last_fault = serial;
      throw injected_fault(c->stage, o == op::push ? "push" : "pop", k, serial);
    }
    if (u < o_.fail_probability + o_.delay_probability) {
      // Counted when it begins (a run abandoned mid-delay still shows it). Not a "last
      // fault" for the deadline: delays never stop while a stage keeps going, and each is
      // at most max_delay, below the deadline (check_options); none comes after the run
      // was asked to end.
      // From 1 tick to max_delay, both included (the draw was below max_delay, so a
      // max_delay of 1 ns never delayed); a max_delay of 0 stalls nothing and is no fault.
      const auto most = static_cast<std::uint64_t>(std::max<clock::rep>(0, o_.max_delay.count()));
      const auto d = most == 0 ? clock::duration::zero()
                               : clock::duration(static_cast<clock::rep>(1 + mix(r, 7) % most));
      if (d.count() != 0) {
        delays_.fetch_add(1, std::memory_order_relaxed);
        std::this_thread::sleep_for(d);
      }
    }
  }
  // The context of `stage`'s replica `replica`: its decision stream comes from (run seed,
  // stage, replica), whether it has a thread of its own or is fused onto a host's.
  std::unique_ptr<thread_ctx> make_ctx(const std::string& stage, std::size_t replica) {
    auto ctx = std::make_unique<thread_ctx>();
    ctx->owner = this;
    ctx->stage = stage;
    ctx->stream = mix(mix(seed_, hash_name(stage)), replica);
    return ctx;
  }
  void on_thread_begin(const std::string& stage, std::size_t replica) noexcept override {
    try {
      auto ctx = make_ctx(stage, replica);
      t_ctx = ctx.get();
      t_root = ctx.get();
      std::lock_guard lk(mu_);
      auto& s = stages_[stage];
      ++s.begun;
      s.replicas.insert(replica);
      ctxs_.push_back(std::move(ctx));
    } catch (...) {
      t_ctx = nullptr;  // out of memory: this thread gets no faults
      t_root = nullptr;
    }
  }
  void* on_fused_begin(const std::string& stage, std::size_t replica) noexcept override {
    thread_ctx* const outer = t_ctx;
    thread_ctx* const root = t_root;
    if (outer == nullptr || root == nullptr || root->owner != this) return outer;
    for (const auto& f : root->fused) {
      if (f->stage == stage) {
        t_ctx = f.get();
        return outer;
      }
    }
    try {
      auto ctx = make_ctx(stage, replica);
      t_ctx = ctx.get();
      root->fused.push_back(std::move(ctx));
    } catch (...) {
      t_ctx = outer;  // out of memory: its ops stay the host's
    }
    return outer;
  }
  void on_fused_end(void* outer) noexcept override { t_ctx = static_cast<thread_ctx*>(outer); }
  void on_thread_end() noexcept override {
    if (t_ctx == nullptr || t_ctx->owner != this) return;
    std::lock_guard lk(mu_);
    ++stages_[t_ctx->stage].ended;
    // Ended with no channel op since its last fault: caught and ended, which a stage may.
    if (t_ctx->last_fault != 0) seen_.insert(t_ctx->last_fault);
    t_ctx = nullptr;
    t_root = nullptr;
  }
  void on_stage_exception(const std::string& stage, const std::exception_ptr& e,
                          bool during_teardown) noexcept override {
    try {
      std::lock_guard lk(mu_);
      try {
        std::rethrow_exception(e);
      } catch (const injected_fault& f) {
        seen_.insert(f.serial());  // it left a stage function: not swallowed
        return;
      } catch (const sluice::cancelled&) {
        // A stage passing on its channel's cancel cause in a teardown; thrown with nothing
        // torn down, it is the stage's own (it failed the run).
        if (during_teardown) return;
      } catch (const sluice::stage_error&) {
        if (during_teardown) return;  // likewise (a cancel cause that is a stage_error)
      } catch (...) {
      }
      for (const auto& [st, ex] : user_errors_) {
        if (ex == e) return;  // the same exception, seen again (dead letter, then rethrown)
      }
      user_errors_.emplace_back(stage, e);
    } catch (...) {
    }
  }
  void on_replica_released(const std::string& stage) noexcept override {
    try {
      std::lock_guard lk(mu_);
      ++stages_[stage].released;
    } catch (...) {
    }
  }
  void on_stage_closed(const std::string& stage, bool) noexcept override {
    try {
      std::lock_guard lk(mu_);
      ++stages_[stage].closed;
    } catch (...) {
    }
  }

  // ---- for the run loop --------------------------------------------------------------
  void on_stuck(const std::string& stage) {
    std::lock_guard lk(mu_);
    stuck_.push_back(stage);
  }
  // The time of the last injected failure, cancel or stop, or of the start.
  clock::time_point last_fault() const {
    return clock::time_point(clock::duration(last_fault_.load(std::memory_order_acquire)));
  }
  void mark_fault() noexcept {
    // a max over the threads; acq/rel only orders the time stamp itself.
    const auto now = clock::now().time_since_epoch().count();
    auto cur = last_fault_.load(std::memory_order_relaxed);
    while (cur < now && !last_fault_.compare_exchange_weak(cur, now, std::memory_order_acq_rel)) {
    }
  }
  void final_stop() {
    stopped_.store(true, std::memory_order_release);
    graph_->request_stop();
  }
  bool stopped_by_us() const noexcept { return stopped_.load(std::memory_order_acquire); }
  bool cancelled_by_us() const noexcept { return cancelled_.load(std::memory_order_acquire); }
  // Some stage function let an exception out (an injected fault or its own): a teardown
  // nobody asked for is then that failure's, not a cancel() the graph's own code made.
  bool a_stage_threw() {
    std::lock_guard lk(mu_);
    return !seen_.empty() || !user_errors_.empty();
  }
  void cancel_now() {
    cancelled_.store(true, std::memory_order_release);
    graph_->cancel();
  }
  bool control_fired() const noexcept { return fired_.load(std::memory_order_acquire); }
  control kind() const noexcept { return control_; }
  std::uint64_t control_at() const noexcept { return control_at_; }

  std::uint64_t failures() const noexcept { return failures_.load(); }
  std::uint64_t delays() const noexcept { return delays_.load(); }
  std::uint64_t cancels() const noexcept { return control_ == control::cancel && control_fired() ? 1 : 0; }
  std::uint64_t stops() const noexcept { return control_ == control::stop && control_fired() ? 1 : 0; }

  // After the run (every stage thread joined).
  std::mutex mu_;
  std::map<std::string, stage_rec> stages_;                              // guarded by mu_
  std::map<std::uint64_t, std::string> thrown_;                          // serial -> stage; guarded by mu_
  std::set<std::uint64_t> seen_;                                         // guarded by mu_
  std::vector<std::pair<std::string, std::exception_ptr>> user_errors_;  // guarded by mu_
  std::vector<std::string> stuck_;                                       // guarded by mu_

 private:
  void fire_control() {
    fired_.store(true, std::memory_order_release);
    mark_fault();
    if (control_ == control::cancel) {
      cancel_now();
    } else {
      final_stop();
    }
  }

  const std::uint64_t seed_;
  const stress_options o_;
  control control_ = control::none;
  std::uint64_t control_at_ = 0;
  sluice::graph* graph_ = nullptr;
  std::atomic<std::uint64_t> ops_{0};
  std::atomic<std::uint64_t> serial_{0};
  std::atomic<std::uint64_t> failures_{0}, delays_{0};
  std::atomic<bool> fired_{false};
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<clock::rep> last_fault_{clock::now().time_since_epoch().count()};
  std::vector<std::unique_ptr<thread_ctx>> ctxs_;  // guarded by mu_
};

// What is left alive of abandoned runs (a stage that never returned): never destroyed.
struct abandoned_run {
  std::shared_ptr<run_engine> engine;
  std::unique_ptr<sluice::graph> graph;
};
std::mutex g_abandoned_mu;
std::vector<abandoned_run>* g_abandoned = nullptr;  // guarded by g_abandoned_mu; leaked on purpose

// The stages holding a run up, from two snapshots a moment apart (or further apart, see
// unsure below). Alive: running or
// stuck. While items still flow (a stop that a source ignores), the alive stages that
// produced with no producing stage upstream: the downstream ones only drain what it
// sends. When nothing flows, the alive stages not parked on a channel whose other side
// is alive (they are in their own code, or waiting for something that will not come).
// A stage with several threads (replicas, a merge's inputs) shows one parked thread on
// its row; when every stage looks parked, the hang is in a thread of one of those whose
// parked threads are fewer than its threads: the lowest of them along the channels
// (ordered replicas waiting for their turn off any channel are short of threads too).
std::vector<std::string> culprits(sluice::graph& g) {
  const auto& core = detail::graph_access::core(g);
  const std::vector<std::string> calls_a = core.fused_calls_in_progress();
  const metrics::snapshot a = g.snapshot();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  metrics::snapshot b = g.snapshot();
  std::set<std::string> alive, produced;  // produced: since a
  auto look = [&] {
    alive.clear();
    produced.clear();
    for (const auto& st : b.stages) {
      if (st.state != "running" && st.state != "stuck") continue;
      alive.insert(st.name);
      for (const auto& old : a.stages) {
        if (old.name == st.name && st.items_out > old.items_out) produced.insert(st.name);
      }
    }
  };
  // A stage that produced while an alive stage feeding it did not: the feeder may only
  // have been off the CPU for the look (2 cores, a loaded machine), and the stage, draining
  // what it was sent, would be named instead of it. Look longer (up to 100 ms in all) while
  // that is so; the counts are since a, so each look adds to the last. So too while no
  // stage produced at all: every thread may have been off the CPU for 20 ms (a loaded CI
  // machine), and each one found running then would be named, not only the one that hangs.
  auto unsure = [&] {
    if (produced.empty() && !alive.empty()) return true;
    for (const auto& c : b.channels) {
      if (produced.count(c.to) != 0 && produced.count(c.from) == 0 && alive.count(c.from) != 0) return true;
    }
    return false;
  };
  look();
  for (int more = 0; more < 4 && unsure(); ++more) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    b = g.snapshot();
    look();
  }
  std::set<std::string> in_call;  // fused stages a host thread was inside at both looks
  for (const auto& f : core.fused_calls_in_progress()) {
    if (std::find(calls_a.begin(), calls_a.end(), f) != calls_a.end()) in_call.insert(f);
  }
  // A thread owner named below whose thread is inside a fused stage's call is held up by
  // that stage (DESIGN §2: a fused stage keeps its own name): name it instead.
  auto fused_instead = [&](std::vector<std::string> owners) {
    std::vector<std::string> named;
    for (const auto& o : owners) {
      bool replaced = false;
      for (const auto& st : b.stages) {
        if (st.runs_on == o && in_call.count(st.name) != 0) {
          if (std::find(named.begin(), named.end(), st.name) == named.end()) named.push_back(st.name);
          replaced = true;
        }
      }
      if (!replaced && std::find(named.begin(), named.end(), o) == named.end()) named.push_back(o);
    }
    return named;
  };
  std::vector<std::string> out;
  if (!produced.empty()) {
    for (const auto& name : produced) {
      bool fed = false;
      for (const auto& c : b.channels) {
        if (c.to == name && produced.count(c.from) != 0) fed = true;
      }
      if (!fed) out.push_back(name);
    }
  } else {
    for (const auto& st : b.stages) {
      if (alive.count(st.name) == 0) continue;
      // A fused stage has no thread: if the thread that runs it does not return, the
      // stage that owns that thread (runs_on) is named.
      if (!st.runs_on.empty()) continue;
      // The thread is parked if it waits on a channel whose other side is alive. A
      // thread blocked in a push of a stage fused onto it shows that push on the fused
      // stage's row, not on its own.
      auto parked_on_alive = [&](const metrics::stage_snapshot& row) {
        for (const auto& c : b.channels) {
          if (c.name != row.blocked_on) continue;
          if ((row.blocked_op == "push" && alive.count(c.to) != 0) || (row.blocked_op == "pop" && alive.count(c.from) != 0)) {
            return true;
          }
        }
        return false;
      };
      bool parked = parked_on_alive(st);
      for (const auto& f : b.stages) {
        if (f.runs_on == st.name && parked_on_alive(f)) parked = true;
      }
      if (!parked) out.push_back(st.name);
    }
  }
  if (out.empty()) {
    // Parked threads per thread owner (a stage, or the stage its fused stages run on):
    // pops on its inputs, pushes on its outputs and on those of its fused stages.
    std::map<std::string, std::string> owner;
    for (const auto& st : b.stages) owner[st.name] = st.runs_on.empty() ? st.name : st.runs_on;
    std::map<std::string, std::size_t> parked_threads;
    for (const auto& c : b.channels) {
      if (owner.count(c.to) != 0) parked_threads[owner[c.to]] += c.stats.waiting_pop;
      if (owner.count(c.from) != 0) parked_threads[owner[c.from]] += c.stats.waiting_push;
    }
    std::vector<std::string> short_of_threads;
    for (const auto& st : b.stages) {
      if (alive.count(st.name) != 0 && st.runs_on.empty() && st.replicas > 1 && parked_threads[st.name] < st.replicas) {
        short_of_threads.push_back(st.name);
      }
    }
    // Ordered replicas wait for their turn to push off any channel: such a stage shows
    // threads missing too when the hang is downstream of it. Keep the ones with no other
    // downstream (along the channels).
    auto downstream = [&](const std::string& from) {
      std::set<std::string> seen;
      std::vector<std::string> todo{from};
      while (!todo.empty()) {
        const std::string at = todo.back();
        todo.pop_back();
        for (const auto& c : b.channels) {
          if (c.from == at && seen.insert(c.to).second) todo.push_back(c.to);
        }
      }
      return seen;
    };
    for (const auto& name : short_of_threads) {
      const std::set<std::string> below = downstream(name);
      bool lowest = true;
      for (const auto& other : short_of_threads) {
        if (other != name && below.count(other) != 0) lowest = false;
      }
      if (lowest) out.push_back(name);
    }
  }
  if (out.empty()) out.assign(alive.begin(), alive.end());
  return fused_instead(std::move(out));
}

// Whether thread name `comm` is one the graph gives stage `stage` ("name" or "name#i",
// cut to 15 bytes); a thread a stage thread created inherits it.
bool thread_of(const std::string& comm, const std::string& stage) {
  if (comm == stage.substr(0, 15)) return true;
  const std::string prefix = (stage + "#").substr(0, 15);
  return comm.compare(0, prefix.size(), prefix) == 0;
}

// The threads inside stress(), replay() or run_one() now: waiting for their turn, or in
// their run. Another run's thread check leaves them out.
std::mutex g_callers_mu;
std::set<long> g_callers;  // guarded by g_callers_mu

struct waiting_turn {
  const long tid = static_cast<long>(::gettid());
  waiting_turn() {
    const std::lock_guard lock(g_callers_mu);
    g_callers.insert(tid);
  }
  ~waiting_turn() {
    const std::lock_guard lock(g_callers_mu);
    g_callers.erase(tid);
  }
  waiting_turn(const waiting_turn&) = delete;
  waiting_turn& operator=(const waiting_turn&) = delete;
};

bool is_caller(long tid) {
  const std::lock_guard lock(g_callers_mu);
  return g_callers.count(tid) != 0;
}

struct one_run : run_result {
  bool fatal = false;  // the build function or start() failed: no point in more runs
  std::uint64_t cancels = 0, stops = 0;
};

one_run run_once(const graph_builder& build, std::uint64_t seed, std::size_t run, const stress_options& o,
                 graph_options go) {
  // One run at a time in a process (stress, replay and run_one from several threads take
  // turns): each run compares the process's threads with a baseline, so another run's
  // stage threads would be reported as this run's leaks.
  static std::mutex one_at_a_time;
  // Called again from a build function (stress() inside stress()): it would wait for the
  // lock its own thread holds, for ever, saying nothing. Refused instead; the outer run
  // reports it as the build function's exception.
  static thread_local bool in_run = false;
  if (in_run) {
    throw std::logic_error(
        "sluice::testing: stress(), replay() or run_one() called from a build function of a stress run; "
        "runs take turns, a run at a time, so it would wait for itself");
  }
  // Called from a stage function of the graph under a run: it would wait for the lock the
  // run holds, the run would wait for the stage, and stress would name the stage as one
  // that ignores its stop token. Refused: the stage fails with this, which names it.
  if (t_root != nullptr) {
    throw std::logic_error("sluice::testing: stress(), replay() or run_one() called from stage '" + t_root->stage +
                           "' of a stress run; runs take turns, a run at a time, so it would wait for itself");
  }
  // A thread waiting here for its turn is no thread of the run before it, even one made
  // after that run began: the run's thread check leaves it out (it said "leaked").
  const waiting_turn wait_mark;
  const std::lock_guard one_run_at_a_time(one_at_a_time);
  in_run = true;
  struct leave {
    ~leave() { in_run = false; }
  } leave_run;
  one_run res;
  auto add = [&](std::string stage, std::string what) {
    res.violations.push_back(violation{seed, run, std::move(stage), std::move(what)});
  };
  // A sanitizer runtime starts a helper thread with the process's first thread: let it
  // exist before the first run's baseline, whichever call makes that run (run_one too: its
  // first call in a TSan build reported the helper as a thread the run left behind).
  static std::once_flag helper_made;
  std::call_once(helper_made, [] { std::thread([] {}).join(); });
  const auto before = list_threads();
  auto eng = std::make_shared<run_engine>(seed, o);
  go.teardown_deadline = o.deadline;
  go.on_stuck = [e = eng.get()](const std::string& stage) { e->on_stuck(stage); };
  auto g = std::make_unique<sluice::graph>(go);
  detail::graph_access::core(*g).set_fault_hook(eng.get());
  eng->attach(*g);
  try {
    build(*g);
  } catch (...) {
    add("", "the build function threw: " + describe(std::current_exception()));
    res.fatal = true;
    // A build function that started the graph (misuse) had faults injected: counted once
    // it is torn down (the report said "0 faults" and named an injected one).
    g.reset();
    res.failures = eng->failures();
    res.delays = eng->delays();
    res.cancels = eng->cancels();
    res.stops = eng->stops();
    return res;
  }

  std::optional<report> rep;
  std::exception_ptr outcome;
  bool ended = false;
  eng->mark_fault();  // the start counts as the first "fault" for the deadline
  try {
    g->start();
  } catch (...) {
    add("", "start() threw: " + describe(std::current_exception()));
    res.fatal = true;
    outcome = std::current_exception();
  }
  // phase 0: running; 1: stress sent its own request_stop (nothing else ended it);
  // 2: a hang was reported and the run cancelled; then abandon.
  int phase = 0;
  clock::time_point phase_at = clock::now();
  const clock::time_point started = phase_at;
  const auto poll = std::min<clock::duration>(std::chrono::milliseconds(20), o.deadline);
  while (!ended && !res.fatal) {
    try {
      rep = g->wait_for(poll);
      ended = rep.has_value();
    } catch (...) {
      outcome = std::current_exception();
      ended = true;
    }
    if (ended) break;
    const auto now = clock::now();
    const auto since = std::max(eng->last_fault(), phase_at);
    // Failures are injected for at most `deadline` of a run that nothing else ends: a graph
    // whose stages restart after each one never went `deadline` without a failure, so it
    // never got its closing stop, and stress() never returned.
    const bool faulted_long = phase == 0 && now - started >= o.deadline;
    const bool quiet_long = now - since >= o.deadline;
    if (!quiet_long && !faulted_long) continue;
    const bool torn = detail::graph_access::core(*g).tearing_down();  // a failure or a cancel
    const bool stopped = eng->kind() == control::stop && eng->control_fired();
    if (!quiet_long && (torn || stopped)) continue;  // ending: give it its deadline
    if (phase == 0 && !torn && !stopped) {
      // Nothing asked it to end: a graph whose sources run until stopped. Stop it.
      eng->final_stop();
      phase = 1;
      phase_at = clock::now();
      continue;
    }
    if (phase <= 1) {
      const std::string why = torn ? (eng->cancelled_by_us() ? "the cancel()"
                                      : eng->a_stage_threw() ? "a stage failure"
                                                             : "a cancel() by the graph's own code")
                                   : (phase == 1 ? "stress's closing request_stop()" : "the request_stop()");
      const std::string late = "the run did not end within " + ms_text(o.deadline) + " of its last fault (after " + why + ")";
      // request_stop() asks only the sources (stages with no input) to stop: only a source
      // still running can be ignoring its stop token; another waits for something else.
      const metrics::snapshot now_seen = g->snapshot();
      auto is_source = [&](const std::string& name) {
        return std::none_of(now_seen.channels.begin(), now_seen.channels.end(),
                            [&](const metrics::channel_snapshot& c) { return c.to == name; });
      };
      const std::vector<std::string> named = culprits(*g);
      for (const auto& name : named) {
        add(name, late + ": stage '" + name + "' is still running" +
                      (!torn && is_source(name) ? " (does it ignore its stop token?)" : ""));
      }
      // It ended while culprits() looked (up to 100 ms): still late, with no stage to name.
      if (named.empty()) add("", late + "; it ended while stress looked for the stage that held it up");
      eng->cancel_now();
      phase = 2;
      phase_at = clock::now();
      continue;
    }
    // Cancelled and still not over: a stage that never returns. Leave it running.
    for (const auto& name : culprits(*g)) {
      add(name, "stage '" + name + "' did not return even " + ms_text(o.deadline) +
                    " after cancel(); the run is abandoned (its threads are left running) and stress stops here");
    }
    res.abandoned = true;
    std::lock_guard lk(g_abandoned_mu);
    if (g_abandoned == nullptr) g_abandoned = new std::vector<abandoned_run>();
    g_abandoned->push_back(abandoned_run{eng, std::move(g)});
    res.failures = eng->failures();
    res.delays = eng->delays();
    res.cancels = eng->cancels();
    res.stops = eng->stops();
    res.cancelled = true;
    res.stopped = eng->stopped_by_us();
    return res;
  }
  const report last = g->last_report();
  g.reset();  // every stage thread was joined by the wait; this destroys the graph itself

  res.failures = eng->failures();
  res.delays = eng->delays();
  res.cancels = eng->cancels();
  res.stops = eng->stops();
  res.report = last;
  res.error = outcome;
  res.cancelled = eng->cancelled_by_us();
  res.stopped = eng->stopped_by_us();
  {
    std::lock_guard lk(eng->mu_);
    res.stuck = eng->stuck_;
  }
  if (res.fatal) return res;

  std::lock_guard lk(eng->mu_);
  // What run() threw.
  std::exception_ptr first_user;
  if (outcome) {
    try {
      std::rethrow_exception(outcome);
    } catch (const stage_error& e) {
      // The stage's own exception: anything but an injected fault or a cancel cause passed
      // on, and a cancelled/stage_error the stage threw with nothing torn down (recorded
      // by on_stage_exception).
      bool own = std::any_of(eng->user_errors_.begin(), eng->user_errors_.end(),
                             [&](const auto& u) { return u.second == e.cause(); });
      if (!own) {
        try {
          std::rethrow_exception(e.cause());
        } catch (const injected_fault& f) {
          if (eng->thrown_.count(f.serial()) == 0) add(e.stage(), "stage_error carries an injected_fault of another run");
        } catch (const sluice::cancelled&) {
        } catch (...) {
          own = true;
        }
      }
      if (own) {
        first_user = e.cause();
        add(e.stage(), "run() threw stage_error with the stage's own exception: " + describe(e.cause()));
      }
    } catch (const sluice::cancelled&) {
      // Not stress's cancel: the graph's own code called cancel() (a stage that throws
      // sluice::cancelled while nothing is torn down makes run() throw stage_error, above).
      // DESIGN §8 allows cancelled out of run(), and a graph may cancel itself.
    } catch (...) {
      add("", "run() threw something other than stage_error or cancelled: " + describe(outcome));
    }
  }
  // The user's own exceptions, also those not first (suppressed) or skipped.
  for (const auto& [stage, e] : eng->user_errors_) {
    if (e == first_user) continue;
    add(stage, "stage '" + stage + "' threw its own exception: " + describe(e));
  }
  // Injected faults a stage swallowed.
  for (const auto& [serial, stage] : eng->thrown_) {
    if (eng->seen_.count(serial) == 0) {
      add(stage, "stage '" + stage + "' caught an injected_fault and went on (fault #" + std::to_string(serial) +
                     "): a stage must let it out of the push/pop that threw it, or end");
    }
  }
  // Stuck stages (the graph's teardown deadline).
  std::set<std::string> named;
  for (const auto& v : res.violations) named.insert(v.stage);
  for (const auto& s : last.stuck) {
    if (named.insert(s).second) {
      add(s, "stage '" + s + "' was named stuck by the graph: still running " + ms_text(o.deadline) +
                 " after the teardown began (or, a source, after the stop was asked)");
    }
  }
  // Accounting on every channel.
  for (const auto& c : last.metrics.channels) {
    const auto& st = c.stats;
    // An external channel (a JetStream edge) is a reading of something outside the graph:
    // its messages may stay in the stream, and the identity does not apply (report::balanced).
    if (c.external) continue;
    if (!c.balanced()) {
      add(c.from, "channel '" + c.name + "': pushed " + std::to_string(st.pushed) + " != popped " +
                      std::to_string(st.popped) + " + discarded " + std::to_string(st.discarded) + " (" +
                      std::to_string(st.items) + " left buffered)");
    }
  }
  // Cleanup: each replica's task (function object, handles) destroyed, on_close once.
  for (const auto& [name, s] : eng->stages_) {
    if (s.released != s.begun) {
      add(name, "stage '" + name + "': " + std::to_string(s.released) + " of " + std::to_string(s.begun) +
                    " replicas' function objects were destroyed");
    }
    if (s.begun != 0 && s.closed != 1) {
      add(name, "stage '" + name + "': its cleanup (on_close) ran " + std::to_string(s.closed) + " times");
    }
  }
  // Threads: those alive now that were not before, named by the stage that made them.
  std::map<long, std::string> extra;
  const auto t_end = clock::now() + std::chrono::milliseconds(100);
  do {
    extra.clear();
    for (const auto& [tid, name] : list_threads()) {
      if (before.count(tid) == 0 && !is_caller(tid)) extra.emplace(tid, name);
    }
    if (extra.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  } while (clock::now() < t_end);
  // A new thread carries the name of the thread that made it: a stage's ("name",
  // "name#i", cut to 15 bytes), on which the stages fused onto it run too. That is all
  // there is to go on: when names agree in their first 15 bytes, or stages are fused
  // onto the one named, each stage it may be is named (the longest name used to be
  // blamed alone, and a fused stage's thread was blamed on its host).
  for (const auto& [tid, comm] : extra) {
    std::vector<std::string> hosts;  // stages whose own thread's name it carries
    for (const auto& [name, s] : eng->stages_) {
      if (thread_of(comm, name)) hosts.push_back(name);
    }
    std::vector<std::string> may_be = hosts;  // ... and the stages fused onto them
    for (const auto& st : last.metrics.stages) {
      const bool fused_on_host = !st.runs_on.empty() && std::find(hosts.begin(), hosts.end(), st.runs_on) != hosts.end();
      if (fused_on_host && std::find(may_be.begin(), may_be.end(), st.name) == may_be.end()) may_be.push_back(st.name);
    }
    std::string what = "thread " + std::to_string(tid) + " ('" + comm + "') is still alive after the run";
    if (may_be.size() == 1) {
      what += ": stage '" + may_be.front() + "' (or a thread it made) left it behind";
    } else if (!may_be.empty()) {
      std::string list;
      for (std::size_t i = 0; i < may_be.size(); ++i) {
        list += (i == 0 ? "" : i + 1 == may_be.size() ? " or " : ", ") + ("'" + may_be[i] + "'");
      }
      what += ": one of the stages " + list + " (or a thread one made) left it behind; a thread made on a stage's "
              "thread carries its name, cut to 15 bytes, and fused stages run on their host's thread";
    }
    if (may_be.empty()) {
      add("", what);
    } else {
      for (const auto& name : may_be) add(name, what);
    }
  }
  return res;
}

// std::invalid_argument naming the field and its value: a probability outside [0, 1] (or
// NaN), a negative max_delay or one not below the deadline, a deadline that is not positive. (The thresholds add the
// probabilities up, so one out of range would silently change another: a negative
// fail_probability switched the delays off.)
void check_options(const stress_options& o, const char* who) {
  auto bad = [&](const char* field, const std::string& value, const char* want) {
    throw std::invalid_argument(std::string("sluice::testing::") + who + ": stress_options::" + field + " is " +
                                value + "; it must be " + want);
  };
  const std::pair<const char*, double> probabilities[] = {{"fail_probability", o.fail_probability},
                                                          {"delay_probability", o.delay_probability},
                                                          {"cancel_probability", o.cancel_probability},
                                                          {"stop_probability", o.stop_probability}};
  for (const auto& [field, p] : probabilities) {
    if (!(p >= 0.0 && p <= 1.0)) {
      std::ostringstream v;
      v << p;
      bad(field, v.str(), "a probability in [0, 1]");
    }
  }
  // Each pair is one draw (a channel op fails, else is delayed; a run is cancelled, else
  // stopped): over 1 together, the second would silently get less than it asked for.
  auto pair_sum = [&](const char* a, double pa, const char* b, double pb) {
    if (pa + pb > 1.0) {
      std::ostringstream v;
      v << pa << " + " << pb;
      throw std::invalid_argument(std::string("sluice::testing::") + who + ": stress_options::" + a + " + " + b +
                                  " is " + v.str() + "; together they must be at most 1 (one draw decides between them)");
    }
  };
  pair_sum("fail_probability", o.fail_probability, "delay_probability", o.delay_probability);
  pair_sum("cancel_probability", o.cancel_probability, "stop_probability", o.stop_probability);
  auto ns_text = [](clock::duration d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()) + " ns";
  };
  if (o.max_delay.count() < 0) bad("max_delay", ns_text(o.max_delay), "zero or more");
  if (o.deadline.count() <= 0) bad("deadline", ns_text(o.deadline), "more than zero");
  // A delay the deadline cannot outlast would be blamed on the stage it was injected into
  // ("still running (does it ignore its stop token?)") and the run abandoned.
  if (o.max_delay >= o.deadline) {
    bad("max_delay", ns_text(o.max_delay), ("below deadline (" + ns_text(o.deadline) + ")").c_str());
  }
}

stress_report run_many(const graph_builder& build, const stress_options& o, std::uint64_t seed,
                       std::optional<std::uint64_t> only) {
  stress_report r;
  r.seed = seed;
  const auto t0 = clock::now();
  const std::size_t runs = only ? 1 : o.runs;
  for (std::size_t i = 0; i < runs; ++i) {
    const std::uint64_t s = only ? *only : mix(seed, i);
    one_run one = run_once(build, s, i, o, graph_options{});
    ++r.runs;
    r.failures += one.failures;
    r.delays += one.delays;
    r.cancels += one.cancels;
    r.stops += one.stops;
    for (auto& v : one.violations) r.violations.push_back(std::move(v));
    if (one.abandoned) {
      r.abandoned = true;
      break;
    }
    if (one.fatal) {
      r.unbuildable = true;
      break;
    }
  }
  r.faults = r.failures + r.delays + r.cancels + r.stops;
  r.elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t0);
  return r;
}

}  // namespace

stress_report stress(const graph_builder& build, const stress_options& o) {
  check_options(o, "stress");
  // A session that ran nothing must not report that every run held (as `sluice stress
  // --runs 0` is refused).
  if (o.runs == 0) {
    throw std::invalid_argument("sluice::testing::stress: stress_options::runs is 0; it must be at least 1");
  }
  std::uint64_t seed = o.seed;
  if (seed == 0) seed = mix(static_cast<std::uint64_t>(clock::now().time_since_epoch().count()), 0x5EED);
  return run_many(build, o, seed, std::nullopt);
}

stress_report replay(const graph_builder& build, std::uint64_t seed, const stress_options& o) {
  check_options(o, "replay");
  return run_many(build, o, seed, seed);
}

run_result run_one(const graph_builder& build, std::uint64_t seed, const stress_options& o, graph_options go) {
  check_options(o, "run_one");
  return static_cast<run_result>(run_once(build, seed, 0, o, std::move(go)));
}

std::ostream& operator<<(std::ostream& os, const violation& v) {
  os << "run " << v.run << " (seed " << hex(v.seed) << ")";
  if (!v.stage.empty()) os << ", stage '" << v.stage << "'";
  os << ": " << v.what << "\n    replay: sluice::testing::replay(build, " << hex(v.seed) << ", options);";
  return os;
}

std::ostream& operator<<(std::ostream& os, const stress_report& r) {
  std::ostringstream t;
  t << std::fixed << std::setprecision(2) << std::chrono::duration<double>(r.elapsed).count();
  os << "sluice::testing::stress: " << r.runs << " runs, " << r.faults << " faults (" << r.failures << " failures, "
     << r.delays << " delays, " << r.cancels << " cancels, " << r.stops << " stops), " << r.violations.size()
     << " violations in " << t.str() << " s (seed " << hex(r.seed) << ")";
  if (r.abandoned) os << "; a run was abandoned (a stage never returned), stress stopped there";
  if (r.unbuildable) os << "; the build function or start() threw, stress stopped there (every run would)";
  for (const auto& v : r.violations) os << "\n  " << v;
  return os;
}

}  // namespace sluice::testing
