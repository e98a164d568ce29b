// sluice/detail/jetstream_message.hpp — one message taken from a JetStream edge, not yet
// typed: the handle sluice::jetstream::delivery<T> wraps (runtime/jetstream/ has the
// bodies).
//
// Requires: settled (ack/nak/term) at most once; used by one thread at a time.
// Guarantees: move-only; destroyed unsettled, the message is nak'ed (redelivered at
//   once its first two times, then after 100 ms, doubling to 10 s: a message dropped
//   every time does not come back in a hot loop) and freed.
// Lifetime: keeps its subscription's state (and so the connection) alive.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace sluice::jetstream::detail {

struct sub_state;

// One fetched message, not typed. Move-only; nak'ed on destruction unless settled.
class message {
 public:
  message() = default;
  message(void* msg, std::shared_ptr<sub_state> sub) noexcept : msg_(msg), sub_(std::move(sub)) {}
  message(message&& o) noexcept : msg_(std::exchange(o.msg_, nullptr)), sub_(std::move(o.sub_)) {}
  message& operator=(message&& o) noexcept {
    if (this != &o) {
      release();
      msg_ = std::exchange(o.msg_, nullptr);
      sub_ = std::move(o.sub_);
    }
    return *this;
  }
  message(const message&) = delete;
  message& operator=(const message&) = delete;
  ~message() { release(); }

  void ack();
  void nak(std::chrono::milliseconds delay);
  void term();
  [[nodiscard]] std::uint64_t deliveries() const;
  [[nodiscard]] std::string id() const;
  [[nodiscard]] std::string_view data() const;
  [[nodiscard]] bool settled() const noexcept { return msg_ == nullptr; }
  // Gives up the natsMsg* unsettled (the caller settles and frees it).
  [[nodiscard]] void* detach() noexcept {
    sub_.reset();
    return std::exchange(msg_, nullptr);
  }

 private:
  void release() noexcept;  // nak if unsettled, then free
  void* msg_ = nullptr;     // natsMsg*
  std::shared_ptr<sub_state> sub_;
};

}  // namespace sluice::jetstream::detail
