// sluice/jetstream_codec.hpp — how an item of a JetStream edge becomes the bytes of one
// message and comes back (sluice/jetstream.hpp's publish and subscribe use it).
//
//   template <> struct sluice::jetstream::codec<my_record> {
//     static std::string encode(const my_record& r);     // the message body
//     static my_record decode(std::string_view bytes);   // throws on bad input
//   };
//
// Provided: std::string and sluice::buffer (the bytes as they are), and trivially
// copyable types (their object representation; same layout and byte order on both ends).
// Requires: decode throws on bytes it cannot read (a message that does not decode is a
//   stage error of the subscribing stage, naming the message).
// Guarantees: decode(encode(v)) == v for the provided codecs.
// Non-guarantees: the trivially copyable codec is not portable across architectures.
#pragma once

#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include "sluice/buffer.hpp"

namespace sluice::jetstream {

// encode(const T&) -> std::string (bytes), decode(std::string_view) -> T (throws on bad input).
template <class T>
struct codec;

template <>
struct codec<std::string> {
  static std::string encode(const std::string& v) { return v; }
  static std::string decode(std::string_view b) { return std::string(b); }
};
template <>
struct codec<sluice::buffer> {
  static std::string encode(const sluice::buffer& v) { return std::string(v.view()); }
  static sluice::buffer decode(std::string_view b) { return sluice::buffer::copy_of(b); }
};
template <class T>
  requires(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>)
struct codec<T> {
  static std::string encode(const T& v) { return std::string(reinterpret_cast<const char*>(&v), sizeof(T)); }
  static T decode(std::string_view b) {
    if (b.size() != sizeof(T)) {
      throw std::runtime_error("sluice::jetstream::codec: a message of " + std::to_string(b.size()) +
                               " bytes does not decode to a " + std::to_string(sizeof(T)) + "-byte item");
    }
    T v;
    std::memcpy(&v, b.data(), sizeof(T));
    return v;
  }
};

}  // namespace sluice::jetstream
