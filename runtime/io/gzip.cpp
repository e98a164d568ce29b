// io::gzip_encoder / gzip_decoder (zlib), gzip_block_compressor (libdeflate or zlib),
// the gzip and gunzip stages, and parallel_gzip's graph stages.
#include "sluice/io/gzip.hpp"

#include <libdeflate.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <exception>
#include <functional>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "sluice/graph.hpp"

namespace sluice::io {
namespace {

constexpr int kGzipWindowBits = 15 + 16;  // zlib: a gzip wrapper, 32 KiB window
constexpr std::size_t kMaxZlibChunk = UINT_MAX;  // zlib's avail_* are unsigned int

void check_level(int level, const char* who) {
  if (level < 0 || level > 9) {
    throw std::invalid_argument(std::string(who) + ": level must be 0..9 (got " +
                                std::to_string(level) + ")");
  }
}

unsigned clamp_uint(std::size_t n) { return static_cast<unsigned>(std::min(n, kMaxZlibChunk)); }

// zlib wants mutable input pointers; it never writes through them.
Bytef* in_ptr(std::string_view in) {
  return reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
}
Bytef* out_ptr(buffer& out) { return reinterpret_cast<Bytef*>(out.spare().data()); }

}  // namespace

// ---- gzip_encoder -------------------------------------------------------------------

struct gzip_encoder::impl {
  z_stream z{};
  bool finished = false;
  explicit impl(int level) {
    check_level(level, "gzip");
    const int r = deflateInit2(&z, level, Z_DEFLATED, kGzipWindowBits, 8, Z_DEFAULT_STRATEGY);
    if (r == Z_MEM_ERROR) throw std::bad_alloc();
    if (r != Z_OK) throw error("gzip: cannot initialise zlib (deflateInit2 returned " + std::to_string(r) + ")");
  }
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;
  ~impl() { deflateEnd(&z); }

  // One deflate call over as much of in/out as zlib's counters take.
  int step(std::string_view& in, buffer& out, int flush) {
    const unsigned avail_in = clamp_uint(in.size());
    const unsigned avail_out = clamp_uint(out.spare().size());
    z.next_in = in_ptr(in);
    z.avail_in = avail_in;
    z.next_out = out_ptr(out);
    z.avail_out = avail_out;
    const int r = deflate(&z, flush);
    in.remove_prefix(avail_in - z.avail_in);
    out.commit(avail_out - z.avail_out);
    return r;
  }
};

gzip_encoder::gzip_encoder(int level) : impl_(std::make_unique<impl>(level)) {}
gzip_encoder::gzip_encoder(gzip_encoder&&) noexcept = default;
gzip_encoder& gzip_encoder::operator=(gzip_encoder&&) noexcept = default;
gzip_encoder::~gzip_encoder() = default;

void gzip_encoder::write(std::string_view& in, buffer& out) {
  if (impl_->finished) throw std::logic_error("gzip_encoder::write after finish");
  while (!in.empty() && !out.full()) {
    const int r = impl_->step(in, out, Z_NO_FLUSH);
    if (r != Z_OK && r != Z_BUF_ERROR) throw error("gzip: deflate failed (" + std::to_string(r) + ")");
  }
}

bool gzip_encoder::finish(buffer& out) {
  while (!impl_->finished) {
    if (out.full()) return false;
    std::string_view none;
    const int r = impl_->step(none, out, Z_FINISH);
    if (r == Z_STREAM_END) {
      impl_->finished = true;
    } else if (r != Z_OK && r != Z_BUF_ERROR) {
      throw error("gzip: deflate failed (" + std::to_string(r) + ")");
    }
  }
  return true;
}

std::uint64_t gzip_encoder::bytes_in() const noexcept { return impl_->z.total_in; }
std::uint64_t gzip_encoder::bytes_out() const noexcept { return impl_->z.total_out; }

// ---- gzip_decoder -------------------------------------------------------------------

struct gzip_decoder::impl {
  z_stream z{};
  bool ignore_garbage = false;
  bool in_member = false;      // a member has started and not ended
  bool zero_padding = false;   // zero bytes followed the last member
  bool half_magic = false;     // a 0x1f after the last member, its next byte not seen yet
  bool garbage = false;        // ignoring trailing garbage: every later byte is dropped
  std::uint64_t consumed = 0;  // compressed bytes taken so far
  std::uint64_t produced = 0;
  std::uint64_t member_start = 0;
  std::uint64_t member_end = 0;  // where the last complete member ended
  std::uint64_t members = 0;
  explicit impl(bool ignore) : ignore_garbage(ignore) {
    const int r = inflateInit2(&z, kGzipWindowBits);
    if (r == Z_MEM_ERROR) throw std::bad_alloc();
    if (r != Z_OK) throw error("gunzip: cannot initialise zlib (inflateInit2 returned " + std::to_string(r) + ")");
  }
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;
  ~impl() { inflateEnd(&z); }

  [[noreturn]] void corrupt(const char* zmsg) const {
    const std::string why = zmsg != nullptr ? zmsg : "invalid data";
    if (members == 0 && consumed - member_start < 10 && why == "incorrect header check") {
      throw error("gunzip: not in gzip format: bad header at byte offset " +
                  std::to_string(member_start));
    }
    // zlib takes the header's method and flags bytes (offsets 2 and 3) together with the
    // magic, so it names them with 4 bytes consumed: point at the byte itself.
    std::uint64_t at = consumed;
    if (consumed - member_start <= 4 && why == "unknown compression method") at = member_start + 2;
    if (consumed - member_start <= 4 && why == "unknown header flags set") at = member_start + 3;
    throw error("gunzip: corrupt gzip data at byte offset " + std::to_string(at) +
                " (member " + std::to_string(members + 1) + ", which starts at byte offset " +
                std::to_string(member_start) + "): " + why);
  }

  // Trailing garbage found: an error, or (ignoring it) the end of the stream.
  void found_garbage(std::string_view& in) {
    if (!ignore_garbage) {
      throw error("gunzip: trailing garbage after gzip member " + std::to_string(members) +
                  " at byte offset " + std::to_string(member_end));
    }
    garbage = true;
    half_magic = false;
    consumed += in.size();
    in.remove_prefix(in.size());
  }

  // Between members (members > 0, in not empty): skips zero padding, classifies what
  // follows. Returns true when a member starts (its first byte, 0x1f, already fed to
  // zlib if it came in an earlier call), false when `in` was used up or is garbage.
  bool next_member(std::string_view& in, buffer& out) {
    if (!half_magic && (zero_padding || in.front() == '\0')) {  // (a 0x1f held over: its next byte decides)
      const std::size_t zeros = std::min(in.find_first_not_of('\0'), in.size());
      in.remove_prefix(zeros);
      consumed += zeros;
      zero_padding = true;
      if (!in.empty()) found_garbage(in);  // zeros, then anything: gzip(1) stops there too
      return false;
    }
    if (!half_magic) {
      if (static_cast<unsigned char>(in.front()) != 0x1f) {
        found_garbage(in);
        return false;
      }
      in.remove_prefix(1);
      ++consumed;
      half_magic = true;
      if (in.empty()) return false;
    }
    switch (static_cast<unsigned char>(in.front())) {
      case 0x8b:
        break;
      case 0x9e: case 0x1e: case 0x9d: case 0xa0:  // old gzip, pack, compress, LZH: gzip(1) decodes them
        throw error("gunzip: data after member " + std::to_string(members) + " at byte offset " +
                    std::to_string(consumed - 1) +
                    " is in an old format (compress, pack, LZH or gzip 0.5) that sluice does not read");
      default:
        found_garbage(in);
        return false;
    }
    if (inflateReset(&z) != Z_OK) throw error("gunzip: inflateReset failed");
    in_member = true;
    half_magic = false;
    member_start = consumed - 1;
    // Feed the magic's first byte (consumed already) to zlib, then go on with `in`.
    static const unsigned char kMagic0 = 0x1f;
    unsigned char none = 0;
    z.next_in = const_cast<Bytef*>(&kMagic0);
    z.avail_in = 1;
    z.next_out = out.full() ? &none : out_ptr(out);
    z.avail_out = 0;  // a header byte produces nothing
    const int r = inflate(&z, Z_NO_FLUSH);
    if (z.avail_in != 0 || (r != Z_OK && r != Z_BUF_ERROR)) corrupt(z.msg);
    return true;
  }
};

gzip_decoder::gzip_decoder(bool ignore_trailing_garbage)
    : impl_(std::make_unique<impl>(ignore_trailing_garbage)) {}
gzip_decoder::gzip_decoder(gzip_decoder&&) noexcept = default;
gzip_decoder& gzip_decoder::operator=(gzip_decoder&&) noexcept = default;
gzip_decoder::~gzip_decoder() = default;

bool gzip_decoder::write(std::string_view& in, buffer& out) {
  impl& d = *impl_;
  for (;;) {
    if (!d.in_member) {
      if (d.garbage) {  // ignoring: drop the rest
        d.consumed += in.size();
        in.remove_prefix(in.size());
        return false;
      }
      if (in.empty()) return false;
      if (d.members > 0) {
        if (!d.next_member(in, out)) {
          if (in.empty()) return false;
          continue;
        }
      } else {
        if (inflateReset(&d.z) != Z_OK) throw error("gunzip: inflateReset failed");
        d.in_member = true;
        d.member_start = d.consumed;
      }
    }
    if (out.full()) return true;
    const unsigned avail_in = clamp_uint(in.size());
    const unsigned avail_out = clamp_uint(out.spare().size());
    d.z.next_in = in_ptr(in);
    d.z.avail_in = avail_in;
    d.z.next_out = out_ptr(out);
    d.z.avail_out = avail_out;
    const int r = inflate(&d.z, Z_NO_FLUSH);
    const unsigned took = avail_in - d.z.avail_in;
    const unsigned made = avail_out - d.z.avail_out;
    in.remove_prefix(took);
    out.commit(made);
    d.consumed += took;
    d.produced += made;
    switch (r) {
      case Z_STREAM_END:
        d.in_member = false;
        ++d.members;
        d.member_end = d.consumed;
        continue;
      case Z_OK:
      case Z_BUF_ERROR:  // no progress possible without more input or more room
        if (out.full()) return true;
        if (in.empty()) return false;
        if (r == Z_BUF_ERROR) d.corrupt("inflate made no progress");
        continue;
      case Z_MEM_ERROR:
        throw std::bad_alloc();
      case Z_NEED_DICT:
        d.corrupt("needs a preset dictionary");
      default:
        d.corrupt(d.z.msg);
    }
  }
}

void gzip_decoder::finish() const {
  const impl& d = *impl_;
  if (d.in_member || d.half_magic) {
    const std::uint64_t start = d.in_member ? d.member_start : d.consumed - 1;
    throw error("gunzip: truncated gzip stream: input ends at byte offset " +
                std::to_string(d.consumed) + " inside member " + std::to_string(d.members + 1) +
                " (which starts at byte offset " + std::to_string(start) + ")");
  }
  if (d.members == 0) {
    throw error("gunzip: not in gzip format: the input is empty (byte offset " +
                std::to_string(d.consumed) + ")");
  }
}

std::uint64_t gzip_decoder::bytes_in() const noexcept { return impl_->consumed; }
std::uint64_t gzip_decoder::bytes_out() const noexcept { return impl_->produced; }
std::uint64_t gzip_decoder::members() const noexcept { return impl_->members; }
std::optional<std::uint64_t> gzip_decoder::trailing_garbage_at() const noexcept {
  if (!impl_->garbage) return std::nullopt;
  return impl_->member_end;
}

// ---- gzip_block_compressor ------------------------------------------------------------

deflate_engine resolve_engine(int level, deflate_engine e) noexcept {
  if (e != deflate_engine::automatic) return e;
  // Measured on log-like data, one thread, 128 KiB blocks (benchmarks/io_bench.cpp,
  // engine_L*): libdeflate vs zlib MB/s (ratio) at level 1: 207 vs 121 (0.267 vs 0.294),
  // level 6: 82 vs 50 (0.220 vs 0.234), level 8: 19 vs 21, level 9: 12 vs 21 (0.213 vs
  // 0.232). libdeflate is faster, and smaller, up to level 7; at 8 and 9 it searches
  // much harder than zlib and is the slower one.
  // zlib's level 9 is larger than libdeflate's level 1 on text (4,952,937 vs 4,866,263
  // bytes for 10 MB of words), so switching engines at 8 made a higher level give a
  // larger file. One engine at every level keeps the levels ordered by size; at 8-9
  // libdeflate is the slower one, which is what those levels ask for.
  (void)level;
  return deflate_engine::libdeflate;
}

struct gzip_block_compressor::impl {
  deflate_engine engine;
  libdeflate_compressor* ld = nullptr;
  z_stream z{};
  bool z_ready = false;

  impl(int level, deflate_engine e) : engine(resolve_engine(level, e)) {
    check_level(level, "parallel_gzip");
    if (engine == deflate_engine::libdeflate) {
      ld = libdeflate_alloc_compressor(level);
      if (ld == nullptr) throw std::bad_alloc();
    } else {
      const int r = deflateInit2(&z, level, Z_DEFLATED, kGzipWindowBits, 8, Z_DEFAULT_STRATEGY);
      if (r == Z_MEM_ERROR) throw std::bad_alloc();
      if (r != Z_OK) throw error("parallel_gzip: cannot initialise zlib");
      z_ready = true;
    }
  }
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;
  ~impl() {
    if (ld != nullptr) libdeflate_free_compressor(ld);
    if (z_ready) deflateEnd(&z);
  }
  std::size_t bound(std::size_t n) {
    if (ld != nullptr) return libdeflate_gzip_compress_bound(ld, n);
    return deflateBound(&z, static_cast<uLong>(n));
  }
};

gzip_block_compressor::gzip_block_compressor(int level, deflate_engine e)
    : impl_(std::make_unique<impl>(level, e)) {}
gzip_block_compressor::gzip_block_compressor(gzip_block_compressor&&) noexcept = default;
gzip_block_compressor& gzip_block_compressor::operator=(gzip_block_compressor&&) noexcept = default;
gzip_block_compressor::~gzip_block_compressor() = default;

std::size_t gzip_block_compressor::bound(std::size_t n) const noexcept { return impl_->bound(n); }
deflate_engine gzip_block_compressor::engine() const noexcept { return impl_->engine; }

void gzip_block_compressor::compress(std::string_view in, buffer& out) {
  if (in.size() > kMaxZlibChunk) throw std::invalid_argument("parallel_gzip: block larger than 4 GiB");
  // Reset first: zlib's deflateBound() counts the gzip wrapper only on a fresh stream.
  if (impl_->z_ready && deflateReset(&impl_->z) != Z_OK) throw error("parallel_gzip: deflateReset failed");
  const std::size_t room = impl_->bound(in.size());
  out.reserve(out.size() + room);
  if (impl_->ld != nullptr) {
    const std::size_t n =
        libdeflate_gzip_compress(impl_->ld, in.data(), in.size(), out.spare().data(), room);
    if (n == 0) throw error("parallel_gzip: libdeflate could not compress a block");
    out.commit(n);
    return;
  }
  z_stream& z = impl_->z;
  z.next_in = in_ptr(in);
  z.avail_in = static_cast<unsigned>(in.size());
  z.next_out = out_ptr(out);
  z.avail_out = clamp_uint(room);
  const int r = deflate(&z, Z_FINISH);
  if (r != Z_STREAM_END) throw error("parallel_gzip: deflate failed (" + std::to_string(r) + ")");
  out.commit(clamp_uint(room) - z.avail_out);
}

// ---- stages -------------------------------------------------------------------------

gzip_stage::gzip_stage(gzip_options o) : options_(o) {
  check_level(o.level, "gzip");
  check_chunk(o.chunk, "gzip_options::chunk");
}

void gzip_stage::operator()(receiver<buffer>& in, sender<buffer>& out, std::stop_token stop) const {
  const std::size_t chunk = std::max<std::size_t>(options_.chunk, 64);
  gzip_encoder enc(options_.level);
  buffer ob(chunk);
  auto flush = [&]() -> bool {
    if (!out.push(std::move(ob))) return false;  // downstream is gone
    ob = buffer(chunk);
    return true;
  };
  while (std::optional<buffer> b = in.pop()) {
    std::string_view v = b->view();
    while (!v.empty()) {
      enc.write(v, ob);
      if (ob.full() && !flush()) return;
    }
  }
  if (in.cancelled() || stop.stop_requested()) return;  // aborted: no trailer
  while (!enc.finish(ob)) {
    if (!flush()) return;
  }
  if (!ob.empty()) (void)out.push(std::move(ob));
}

gunzip_stage::gunzip_stage(gunzip_options o) : options_(std::move(o)) {
  check_chunk(options_.chunk, "gunzip_options::chunk");
  if (options_.defer_errors && !options_.report) {
    throw std::invalid_argument("gunzip: defer_errors needs a report to store the error in");
  }
}

void gunzip_stage::operator()(receiver<buffer>& in, sender<buffer>& out, std::stop_token stop) const {
  const std::size_t chunk = std::max<std::size_t>(options_.chunk, 64);
  gzip_decoder dec(options_.ignore_trailing_garbage);
  buffer ob(chunk);
  auto report = [&] {
    if (!options_.report) return;
    options_.report->members = dec.members();
    options_.report->trailing_garbage_at = dec.trailing_garbage_at();
  };
  try {
    while (std::optional<buffer> b = in.pop()) {
      std::string_view v = b->view();
      for (;;) {
        const bool more = dec.write(v, ob);
        if (ob.full()) {
          if (!out.push(std::move(ob))) return;
          ob = buffer(chunk);
        }
        if (!more && v.empty()) break;
      }
      if (dec.trailing_garbage_at()) break;  // the stream ended there: read no further
    }
    if (!dec.trailing_garbage_at()) {
      // Cut short by an abort or a stop, the input may end inside a member: not an error
      // (request_stop() ends the file's reader as at its end, and only sources get the
      // stop token; a probe's read_file -> gunzip failed "truncated gzip stream" at every
      // graceful stop). What was decoded goes on, as gzip's output goes on without its
      // trailer.
      if (in.cancelled() || stop.stop_requested() || this_stage::graph_stopping()) {
        report();
        if (!ob.empty()) (void)out.push(std::move(ob));
        return;
      }
      dec.finish();
    }
  } catch (const error&) {
    report();
    if (!options_.defer_errors) throw;
    // Everything decoded before the error goes out first; the caller reports the error.
    options_.report->error = std::current_exception();
    if (!ob.empty()) (void)out.push(std::move(ob));
    return;
  }
  report();
  if (!ob.empty()) (void)out.push(std::move(ob));
}

// ---- parallel_gzip: graph stages ---------------------------------------------------
//
//   in ──► P.split ──blocks (budget: two blocks)──► P.deflate#0..jobs-1 (ordered) ──► out
//
// P.split cuts the input into blocks of exactly `block` bytes (the last may be shorter),
// so the members, and with them the output bytes, do not depend on `jobs`. Its output
// budget is two blocks: with one, a replica that finished its block often found the
// channel empty while P.split was still copying the next one (benchmarks/README.md has
// the measurement); four measured no faster than two. Each replica pops one block at a
// time (buffers are weighted: detail/graph_task.hpp's batch_for), so two queued blocks
// go to two replicas.

namespace {

// gzip.split: f(receiver<buffer>&, sender<buffer>&, stop_token).
class block_splitter {
 public:
  explicit block_splitter(std::size_t block) : block_(block) {}

  void operator()(receiver<buffer>& in, sender<buffer>& out, const std::stop_token& stop) const {
    buffer cur;
    bool pushed = false;
    while (std::optional<buffer> b = in.pop()) {
      std::string_view v = b->view();
      if (cur.empty() && v.size() == block_) {  // a reader chunked to the block size: no copy
        if (!out.push(std::move(*b))) return;   // downstream is gone
        pushed = true;
        continue;
      }
      while (!v.empty()) {
        if (cur.capacity() == 0) cur = buffer(block_);
        const std::size_t take = std::min(v.size(), block_ - cur.size());
        cur.append(v.substr(0, take));
        v.remove_prefix(take);
        if (cur.size() == block_) {
          if (!out.push(std::exchange(cur, buffer()))) return;
          pushed = true;
        }
      }
    }
    if (in.cancelled() || stop.stop_requested()) return;  // aborted: no last member
    // An empty input is one empty block, so one empty member: a valid gzip file.
    if (!cur.empty() || !pushed) (void)out.push(std::move(cur));
  }

 private:
  std::size_t block_;
};

// gzip.deflate: one block into one gzip member. Each replica gets its own copy and, on
// its first block, its own compressor.
class block_deflater {
 public:
  block_deflater(int level, deflate_engine e) : level_(level), engine_(e) {}
  block_deflater(const block_deflater& o) : level_(o.level_), engine_(o.engine_) {}  // a fresh compressor
  block_deflater& operator=(const block_deflater&) = delete;
  block_deflater(block_deflater&&) noexcept = default;
  block_deflater& operator=(block_deflater&&) noexcept = delete;
  ~block_deflater() = default;

  buffer operator()(buffer in) {
    if (!c_) c_.emplace(level_, engine_);
    scratch_.clear();
    c_->compress(in.view(), scratch_);
    in.release();  // the block goes back to the pool before the member is pushed
    return buffer::copy_of(scratch_.view());  // right-sized: channels weigh size()
  }

 private:
  int level_;
  deflate_engine engine_;
  std::optional<gzip_block_compressor> c_;
  buffer scratch_;
};

parallel_gzip_options checked(parallel_gzip_options o) {
  check_level(o.level, "parallel_gzip");
  if (o.block == 0) throw std::invalid_argument("parallel_gzip: block must be at least 1 byte");
  // A block is one zlib call; one past 2^63 also made the splitter's budget (2 * block)
  // wrap, and the error named a capacity of 0 on "gzip.split", an option nobody set.
  if (o.block > kMaxZlibChunk) {
    throw std::invalid_argument("parallel_gzip: block must be at most 4 GiB - 1 (" + std::to_string(kMaxZlibChunk) +
                                " bytes; got " + std::to_string(o.block) + ")");
  }
  if (o.jobs == 0) o.jobs = std::max(1u, std::thread::hardware_concurrency());
  return o;
}

stage_options checked(stage_options s) {
  if (s.name.empty()) s.name = "gzip";
  const stage_options plain;
  if (s.replicas != plain.replicas || s.ordered != plain.ordered || !(s.on_error == plain.on_error)) {
    throw std::invalid_argument("parallel_gzip '" + s.name +
                                "': replicas, ordered and on_error do not apply (jobs sets the replicas)");
  }
  return byte_stage_options(std::move(s), "gzip");
}

template <class Deflate>
stream<buffer> add_stages(graph& g, stream<buffer> in, parallel_gzip_options o, stage_options s, Deflate deflate) {
  o = checked(o);
  s = checked(std::move(s));
  stage_options split;
  split.capacity = 2 * o.block;
  stream<buffer> blocks = g.stage<buffer>(s.name + ".split", in, block_splitter(o.block), std::move(split));
  stage_options d;
  d.capacity = s.capacity;
  d.replicas = o.jobs;
  d.ordered = true;
  d.on_close = std::move(s.on_close);
  return g.map(s.name + ".deflate", blocks, std::move(deflate), std::move(d));
}

}  // namespace

parallel_gzip_stages parallel_gzip(parallel_gzip_options o, stage_options s) {
  return {checked(o), checked(std::move(s))};
}

stream<buffer> parallel_gzip(graph& g, stream<buffer> in, parallel_gzip_options o, stage_options s) {
  return add_stages(g, in, o, std::move(s), block_deflater(o.level, o.engine));
}

namespace detail {
stream<buffer> parallel_gzip_with(graph& g, stream<buffer> in, parallel_gzip_options o, stage_options s,
                                  std::function<buffer(buffer)> deflate) {
  return add_stages(g, in, o, std::move(s), std::move(deflate));
}
}  // namespace detail

through_stage<buffer, gzip_stage> gzip(gzip_options o, stage_options s) {
  return through<buffer>(gzip_stage(o), byte_stage_options(std::move(s), "gzip"));
}
through_stage<buffer, gzip_stage> gzip(int level, stage_options s) {
  return gzip(gzip_options{.level = level}, std::move(s));
}
through_stage<buffer, gunzip_stage> gunzip(gunzip_options o, stage_options s) {
  return through<buffer>(gunzip_stage(o), byte_stage_options(std::move(s), "gunzip"));
}

}  // namespace sluice::io
