// sluice/detail/graph_routing.hpp — the internal stages of broadcast, round_robin,
// partition (one input, n outputs) and merge (n inputs, one output, a thread each).
//
// Requires: made only by graph.hpp's builders, run only on the graph's stage threads.
// Guarantees: an item goes to exactly one branch (round_robin, partition) or one copy to
//   each branch (broadcast); a branch that ended early is dropped and the others go on;
//   every item or copy that cannot be delivered is a dead letter of its branch's channel.
// Non-guarantees: order across merge inputs.
#pragma once

#include <cstddef>
#include <functional>
#include <iterator>
#include <memory>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "sluice/channel.hpp"
#include "sluice/detail/graph_core.hpp"
#include "sluice/detail/graph_task.hpp"

namespace sluice::detail {

// ---- internal routing stages ---------------------------------------------------------

enum class route_kind { broadcast, round_robin, partition };
struct no_key {};  // the Key of broadcast and round_robin

// One input, n outputs. Key is only used by partition (std::hash of key(v), modulo n).
template <route_kind K, class T, class Key>
class route_task final : public replica_task {
 public:
  route_task(graph_core& g, receiver<T> rx, std::size_t in_channel, std::vector<sender<T>> outs,
             std::vector<std::size_t> out_channels, Key key)
      : graph_(&g), rx_(std::move(rx)), in_ch_(in_channel), outs_(std::move(outs)),
        out_ch_(std::move(out_channels)), live_(outs_.size(), true), nlive_(outs_.size()),
        key_(std::move(key)), batch_(batch_for(rx_, 1)) {
    in_.reserve(batch_);  // pop_some claims a run of items only where they fit (ring_flavour.hpp)
  }
  ~route_task() override { discard_items(*graph_, in_ch_, in_, pos_); }

  void run(replica_env& env) override {
    for (;;) {
      in_.clear();
      pos_ = 0;
      // An item whose move into in_ throws is a dead letter (batch_inserter), and the
      // graph fails (no error policy here); the ones before it are dead letters too.
      if (nlive_ == 0 || env.stopping() || rx_.pop_some(batch_inserter<T>(in_, env, in_ch_, false), batch_) == 0) {
        return;
      }
      if constexpr (K == route_kind::broadcast) {
        // Each branch's copy has exactly one fate: pushed, or a dead letter of that
        // branch's channel. With a dead-letter hook that includes the copies a branch
        // that ended early would have had, so exact accounting sees every item; without
        // one, ended branches cost nothing. No stopping() check between branches: a
        // push to a cancelled channel fails at once and its copy becomes a dead letter.
        const bool hook = graph_->has_discard_hook();
        if (!hook) {  // no copies for ended branches: only counted
          for (std::size_t i = 0; i < outs_.size(); ++i) {
            if (!live_[i]) graph_->count_held(out_ch_[i], in_.size());
          }
        }
        std::size_t last = outs_.size();  // the last branch that needs a copy takes the batch
        while (last > 0 && !live_[last - 1] && !hook) --last;
        for (std::size_t i = 0; i < last; ++i) {
          if (!live_[i] && !hook) continue;
          std::vector<T> copy;
          if (i + 1 == last) {
            copy = std::move(in_);
            in_.clear();
          } else {
            copy = in_;
          }
          if (!live_[i]) {
            discard_items(*graph_, out_ch_[i], copy);
            continue;
          }
          bool ok = false;
          try {
            ok = push_batch(*graph_, outs_[i], out_ch_[i], copy);
          } catch (...) {
            // The push threw (an injected fault, a throwing copy): this branch's copy and
            // those of the branches not reached yet are dead letters, each of its branch.
            discard_items(*graph_, out_ch_[i], copy);
            for (std::size_t j = i + 1; j < last; ++j) {
              if (!hook) {
                if (live_[j]) graph_->count_held(out_ch_[j], in_.size());  // (ended ones are counted above)
                continue;
              }
              std::vector<T> rest = in_;
              discard_items(*graph_, out_ch_[j], rest);
            }
            in_.clear();
            throw;
          }
          if (!ok) drop(i);
        }
        in_.clear();
      } else {
        while (pos_ < in_.size()) {
          if (env.stopping() || nlive_ == 0) return;
          T& v = in_[pos_];
          if constexpr (K == route_kind::round_robin) {
            bool sent = false;
            while (!sent && nlive_ > 0) {
              next_ = (next_ + 1) % outs_.size();
              if (!live_[next_]) continue;
              if (push_keep(outs_[next_], v)) {
                sent = true;
              } else {
                drop(next_);
              }
            }
            if (!sent) return;
          } else {
            const auto k = key_(std::as_const(v));
            const std::size_t i = std::hash<std::decay_t<decltype(k)>>{}(k) % outs_.size();
            if (!live_[i] || !push_keep(outs_[i], v)) {
              if (live_[i]) drop(i);
              // Its branch has ended: a dead letter of that branch, counted hook or not.
              graph_->discard_held(out_ch_[i], v);
            }
          }
          ++pos_;
        }
      }
    }
  }
  void renew() override {}

 private:
  void drop(std::size_t i) {
    live_[i] = false;
    --nlive_;
    outs_[i].reset();
  }

  graph_core* graph_;
  receiver<T> rx_;
  std::size_t in_ch_;
  std::vector<sender<T>> outs_;
  std::vector<std::size_t> out_ch_;
  std::vector<bool> live_;
  std::size_t nlive_;
  Key key_;
  std::size_t batch_;
  std::vector<T> in_;
  std::size_t pos_ = 0;
  std::size_t next_ = static_cast<std::size_t>(-1);
};

// merge: thread i forwards input i into the shared output.
template <class T>
class merge_task final : public replica_task {
 public:
  merge_task(graph_core& g, receiver<T> rx, sender<T> tx, std::size_t out_channel)
      : graph_(&g), rx_(std::move(rx)), tx_(std::move(tx)), out_ch_(out_channel),
        batch_(batch_for(rx_, 1)) {}

  void run(replica_env& env) override {
    std::vector<T> buf;
    buf.reserve(batch_);
    try {
      // An item whose move into buf throws is a dead letter (batch_inserter), named for
      // the output as what buf holds is (merge_task knows no input channel).
      while (!env.stopping() && rx_.pop_some(batch_inserter<T>(buf, env, out_ch_, false), batch_) != 0) {
        if (!push_batch(*graph_, tx_, out_ch_, buf)) return;
      }
    } catch (...) {
      discard_items(*graph_, out_ch_, buf);  // a push that threw: what it held is a dead letter
      throw;
    }
  }
  void renew() override {}

 private:
  graph_core* graph_;
  receiver<T> rx_;
  sender<T> tx_;
  std::size_t out_ch_;
  std::size_t batch_;
};

}  // namespace sluice::detail
