// tests/fuzz/gunzip_fuzz.cpp — io::gzip_decoder against zlib's own decoding.
//
// Input: byte 0's low 5 bits pick the output buffer size and bit 5 the decoder's
// ignore_trailing_garbage; byte 1 is the size of the pieces the compressed bytes are fed
// in (0: all at once); the rest is the compressed stream. When byte 0's top three bits
// are all set (1 input in 8), the rest is instead plain data that io::gzip_encoder
// compresses at level byte1 % 10 and that must come back.
//
// Properties:
//   - The decoder throws only io::error (anything else escapes and is a crash).
//   - The reference is zlib's inflate (gzip wrapper) run member after member over the
//     whole input: it accepts a stream of one or more members followed by nothing or
//     by zero bytes only. Where it accepts, the decoder must succeed with the same
//     bytes and the same number of members.
//   - Where the decoder succeeds, its output is exactly the members the reference
//     decoded completely before the first thing that is not a member (it may ignore
//     trailing junk, it may never invent or drop data).
//   - Where it fails, what it wrote is a prefix of what the reference decoded before
//     stopping.
//   - Strict (the default): whatever the reference does not accept is an io::error.
//   - ignore_trailing_garbage: trailing_garbage_at() is empty where the reference
//     accepts, and is the end of the last member wherever the decoder succeeds on a
//     stream the reference does not accept. After at least one member, bytes whose first
//     non-zero byte is not 0x1f (so no new member, nor another gzip(1) format) are
//     garbage: the decoder must succeed there.
//   - bytes_out() counts what was written; bytes_in() never exceeds the input.
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "sluice/buffer.hpp"
#include "sluice/io/error.hpp"
#include "sluice/io/gzip.hpp"

namespace {

using sluice::fuzz::printable;

struct reference {
  bool accepted = false;   // members, then nothing or zero bytes only
  std::string members;     // the output of the members decoded completely
  std::string attempted;   // members + what the first bad member produced before failing
  std::uint64_t count = 0; // members decoded completely
  std::size_t end = 0;      // the input offset just after the last complete member
};

reference zlib_reference(std::string_view data) {
  reference r;
  std::size_t pos = 0;
  for (;;) {
    if (pos == data.size()) {
      r.accepted = r.count > 0;
      break;
    }
    if (r.count > 0 && data[pos] == '\0') {
      r.accepted = data.find_first_not_of('\0', pos) == std::string_view::npos;
      break;
    }
    z_stream z{};
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) sluice::fuzz::fail(__FILE__, __LINE__, "inflateInit2", "");
    std::string out;
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data() + pos));
    z.avail_in = static_cast<uInt>(data.size() - pos);
    int rc = Z_OK;
    char room[16384];
    while (rc == Z_OK) {
      z.next_out = reinterpret_cast<Bytef*>(room);
      z.avail_out = sizeof room;
      rc = inflate(&z, Z_NO_FLUSH);
      out.append(room, sizeof room - z.avail_out);
      if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0) rc = Z_BUF_ERROR;  // truncated
    }
    const std::size_t used = data.size() - pos - z.avail_in;
    inflateEnd(&z);
    if (rc != Z_STREAM_END) {
      r.attempted = r.members + out;
      return r;
    }
    r.members += out;
    ++r.count;
    pos += used;
    r.end = pos;
  }
  r.attempted = r.members;
  return r;
}

struct outcome {
  bool ok = false;
  std::string out;
  std::string error;
  std::uint64_t members = 0;
  std::optional<std::uint64_t> garbage_at;
};

outcome decode(std::string_view data, std::size_t out_size, std::size_t piece, bool ignore_garbage) {
  outcome o;
  sluice::io::gzip_decoder d(ignore_garbage);
  sluice::buffer ob(out_size);
  auto drain = [&] {
    o.out.append(ob.view());
    ob.clear();
  };
  try {
    std::string_view rest = data;
    do {
      std::string_view in = rest.substr(0, piece == 0 ? rest.size() : piece);
      rest.remove_prefix(in.size());
      while (d.write(in, ob)) {
        SLUICE_FUZZ_CHECK(ob.full(), "write() returned true with room left");
        drain();
      }
      SLUICE_FUZZ_CHECK(in.empty(), "write() returned false with input left");
      drain();
    } while (!rest.empty());
    d.finish();
    o.ok = true;
  } catch (const sluice::io::error& e) {
    drain();
    o.error = e.what();
    SLUICE_FUZZ_CHECK(!o.error.empty() && o.error.find('\n') == std::string::npos,
                      "an io::error is one non-empty line: " + o.error);
  }
  SLUICE_FUZZ_CHECK(d.bytes_out() == o.out.size(),
                    std::to_string(d.bytes_out()) + " counted, " + std::to_string(o.out.size()) + " written");
  SLUICE_FUZZ_CHECK(d.bytes_in() <= data.size(), std::to_string(d.bytes_in()));
  o.members = d.members();
  o.garbage_at = d.trailing_garbage_at();
  return o;
}

void check_decode(std::string_view data, std::size_t out_size, std::size_t piece, bool ignore_garbage) {
  const reference ref = zlib_reference(data);
  const outcome got = decode(data, out_size, piece, ignore_garbage);
  const std::string where = " (input " + printable(data) + ", out " + std::to_string(out_size) +
                            ", piece " + std::to_string(piece) + (ignore_garbage ? ", ignoring garbage" : "") + ")";
  if (!ignore_garbage) {
    SLUICE_FUZZ_CHECK(!got.garbage_at, "strict decoder reports ignored garbage" + where);
    SLUICE_FUZZ_CHECK(ref.accepted || !got.ok, "zlib does not accept the stream, gunzip did" + where);
  } else if (ref.accepted) {
    SLUICE_FUZZ_CHECK(!got.garbage_at, "garbage reported at " + std::to_string(got.garbage_at.value_or(0)) + where);
  } else {
    if (got.ok) {
      SLUICE_FUZZ_CHECK(got.garbage_at && *got.garbage_at == ref.end,
                        "success on a stream zlib refuses: garbage_at " + std::to_string(got.garbage_at.value_or(0)) +
                            ", last member ends at " + std::to_string(ref.end) + where);
    }
    if (ref.count > 0) {
      const std::size_t nz = data.find_first_not_of('\0', ref.end);
      if (nz != std::string_view::npos && static_cast<unsigned char>(data[nz]) != 0x1f) {
        SLUICE_FUZZ_CHECK(got.ok, "trailing garbage not ignored: " + got.error + where);
      }
    }
  }
  if (ref.accepted) {
    SLUICE_FUZZ_CHECK(got.ok, "zlib accepts the stream, gunzip said: " + got.error + where);
    SLUICE_FUZZ_CHECK(got.members == ref.count,
                      std::to_string(got.members) + " members vs zlib's " + std::to_string(ref.count) + where);
  }
  if (got.ok) {
    SLUICE_FUZZ_CHECK(got.out == ref.members,
                      "success with " + std::to_string(got.out.size()) + " bytes, zlib's members give " +
                          std::to_string(ref.members.size()) + where);
  } else {
    SLUICE_FUZZ_CHECK(ref.attempted.compare(0, got.out.size(), got.out) == 0 &&
                          got.out.size() <= ref.attempted.size(),
                      "failed after writing " + std::to_string(got.out.size()) +
                          " bytes that zlib does not decode (" + got.error + ")" + where);
  }
}

void check_round_trip(std::string_view plain, int level, std::size_t out_size) {
  sluice::io::gzip_encoder enc(level);
  std::string gz;
  sluice::buffer ob(out_size);
  std::string_view in = plain;
  while (!in.empty()) {
    enc.write(in, ob);
    gz.append(ob.view());
    ob.clear();
  }
  for (int i = 0; !enc.finish(ob); ++i) {
    SLUICE_FUZZ_CHECK(i < 1 << 20, "finish() never completes");
    gz.append(ob.view());
    ob.clear();
  }
  gz.append(ob.view());
  SLUICE_FUZZ_CHECK(enc.bytes_in() == plain.size(), std::to_string(enc.bytes_in()));
  SLUICE_FUZZ_CHECK(enc.bytes_out() == gz.size(), std::to_string(enc.bytes_out()));
  const reference ref = zlib_reference(gz);
  SLUICE_FUZZ_CHECK(ref.accepted && ref.count == 1 && ref.members == plain,
                    "zlib does not decode what gzip_encoder wrote, level " + std::to_string(level));
  const outcome got = decode(gz, out_size, 0, false);
  SLUICE_FUZZ_CHECK(got.ok && got.out == plain, "gunzip(gzip(x)) != x: " + got.error);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  sluice::fuzz::input in(data, size);
  const std::uint8_t b0 = in.byte();
  const std::uint8_t b1 = in.byte();
  // 1 .. 8 KiB of output room; the pool rounds up to its size classes (256 B at least).
  const std::size_t out_size = 1 + (static_cast<std::size_t>(b0 & 0x1f) << 8);
  if ((b0 & 0xe0) == 0xe0) {
    check_round_trip(in.rest(), b1 % 10, out_size);
  } else {
    check_decode(in.rest(), out_size, b1, (b0 & 0x20) != 0);
  }
  return 0;
}
