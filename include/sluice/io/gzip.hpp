// sluice/io/gzip.hpp — gzip compression and decompression as byte-stream stages.
//
//   namespace io = sluice::io;
//   sluice::pipeline(io::read_file("big.log"), io::gzip({.level = 6}), io::write_file("big.log.gz")).run();
//   sluice::pipeline(io::read_file("big.log.gz"), io::gunzip(), io::write_file("big.log")).run();
//   // blocks of 128 KiB compressed on 4 threads, written in order as one .gz file:
//   sluice::pipeline(io::read_file("big.log", {.chunk = 128 << 10}),
//                    io::parallel_gzip({.level = 6, .jobs = 4}), io::write_file("big.log.gz")).run();
//   // the same stages added to a graph by hand (with sluice/graph.hpp):
//   sluice::graph g;
//   auto gz = io::parallel_gzip(g, raw, {.level = 6, .jobs = 4});   // raw: a stream<buffer>
//
//   // The codecs alone, without a graph:
//   io::gzip_encoder enc(6);
//   sluice::buffer out(64 << 10);
//   std::string_view in = "hello\n";
//   while (!in.empty()) enc.write(in, out);   // (push out and start a new one when full)
//   while (!enc.finish(out)) { /* out is full: push it, start a new one */ }
//
// Requires: an encoder/decoder/compressor object is used by one thread at a time.
// Guarantees:
//   - gzip (zlib, streaming) writes one gzip member; parallel_gzip writes one gzip member
//     per block (RFC 1952 allows a file of several members; gzip -d, zcat, pigz -d,
//     Python's gzip and io::gunzip read it as one stream). Both are what `gzip -d`
//     turns back into the input, byte for byte. An empty input gives one empty member
//     that gzip -t accepts in both (20 bytes from gzip; 23 from parallel_gzip, whose
//     libdeflate writes an empty stored block).
//   - gunzip reads concatenated members and ignores zero bytes after the last member
//     (as gzip(1) does). Corrupt data, a bad CRC or length, a stream that ends inside a
//     member (or inside the next member's magic), data after a member in another of
//     gzip(1)'s formats (compress, pack, LZH), and an empty input are io::errors that name
//     the byte offset in the compressed input (and the member).
//   - Trailing garbage, as gzip(1) 1.12 sees it: after at least one member, anything
//     but zero bytes to the end that does not start a new member (0x1f 0x8b), including
//     zero bytes followed by anything. It is an io::error ("trailing garbage after gzip
//     member N at byte offset X"); with ignore_trailing_garbage it ends the stream
//     normally instead (the output is complete), and report->trailing_garbage_at says
//     where it began (gzip(1)'s "decompression OK, trailing garbage ignored").
//   - defer_errors (needs a report): on any io::error, the stage first pushes all it
//     decoded before the error (every complete member in full, as gzip -dc writes it),
//     ends its output normally and stores the error in report->error instead of
//     throwing. The run then succeeds: the caller must check report->error afterwards.
//     For a writer that cannot take back what it wrote (stdout); a file writer should
//     see the failure (leave defer_errors off) so that it keeps no output.
//   - A report is written by the stage's thread; read it after the run (the join orders it).
//   - Output chunks are full except the last, to their capacity: `chunk` rounded up to
//     the buffer pool's size class (a chunk of 1000 gives 1024-byte buffers, 300 gives
//     384); no empty buffer is pushed.
//   - If the input ends by a cancel (rx.cancelled()) or a stop request, no trailer is
//     written: the stage just returns. gunzip's input that ends inside a member while the
//     graph is stopping (this_stage::graph_stopping(): request_stop() ends the readers
//     upstream as at their end) is not "truncated": what was decoded goes on, and the
//     stage returns.
//   - parallel_gzip is made of graph stages, so the supervisor, snapshots, stall and
//     stuck reports see each of its threads: "P.split" (one thread: cuts the input into
//     blocks) and "P.deflate" (`jobs` ordered replicas, threads "P.deflate#i": each block
//     into one member, emitted in input order), P being the name given ("gzip" by
//     default). The members are the same bytes whatever `jobs` is, and however the
//     input is cut into buffers. Blocks in flight: one being filled by P.split, two
//     blocks' worth in its output channel (its budget is 2 * `block` bytes), one block's
//     worth per replica, the reorder window's 2 * jobs compressed batches, and the
//     output channel's budget. An input that ends by a cancel or a stop request of
//     P.split's own gets no last member.
//   - deflate_engine::automatic is libdeflate at every level, so a higher level never
//     gives a larger output than a lower one from the engine switching (zlib's level 9
//     is larger than libdeflate's level 1 on text); zlib is there when asked for.
// Non-guarantees: compressed bytes differ between engines, levels and block sizes (the
//   decompressed bytes never do). parallel_gzip's ratio is a little lower than gzip's:
//   each block starts without the previous block's window.
// Lifetime: values; the codec objects own their zlib/libdeflate state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "sluice/buffer.hpp"
#include "sluice/channel.hpp"
#include "sluice/io/error.hpp"
#include "sluice/stage.hpp"

namespace sluice {
class graph;
template <class T>
class stream;
}  // namespace sluice

namespace sluice::io {

// A streaming gzip compressor (zlib).
class gzip_encoder {
 public:
  // level 0 (store) .. 9 (best); throws std::invalid_argument otherwise.
  explicit gzip_encoder(int level = 6);
  gzip_encoder(gzip_encoder&&) noexcept;
  gzip_encoder& operator=(gzip_encoder&&) noexcept;
  ~gzip_encoder();

  // Compresses from `in` into out.spare(), advancing `in` past what was taken. Returns
  // when `in` is empty or `out` is full.
  void write(std::string_view& in, buffer& out);
  // Ends the stream into out.spare(): true when the trailer is written; false when `out`
  // filled first (call again with room).
  bool finish(buffer& out);
  [[nodiscard]] std::uint64_t bytes_in() const noexcept;
  [[nodiscard]] std::uint64_t bytes_out() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// A streaming gzip decompressor (zlib) that reads concatenated members.
class gzip_decoder {
 public:
  // ignore_trailing_garbage: trailing garbage (see above) ends the stream instead of
  // throwing; the rest of the input is then taken and dropped.
  explicit gzip_decoder(bool ignore_trailing_garbage = false);
  gzip_decoder(gzip_decoder&&) noexcept;
  gzip_decoder& operator=(gzip_decoder&&) noexcept;
  ~gzip_decoder();

  // Decompresses from `in` into out.spare(), advancing `in`. Returns true when it
  // stopped because `out` is full (call again after making room, even with `in`
  // empty); false when all of `in` is consumed and all output produced.
  // Throws io::error for corrupt data, naming the byte offset.
  bool write(std::string_view& in, buffer& out);
  // The input ended: throws io::error if it ended inside a member or held no member.
  void finish() const;
  [[nodiscard]] std::uint64_t bytes_in() const noexcept;   // compressed bytes consumed
  [[nodiscard]] std::uint64_t bytes_out() const noexcept;
  [[nodiscard]] std::uint64_t members() const noexcept;    // complete members seen
  // Where ignored trailing garbage began (the end of the last member), if any.
  [[nodiscard]] std::optional<std::uint64_t> trailing_garbage_at() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

enum class deflate_engine { automatic, zlib, libdeflate };

// Compresses one whole block into one complete gzip member.
class gzip_block_compressor {
 public:
  explicit gzip_block_compressor(int level = 6, deflate_engine e = deflate_engine::automatic);
  gzip_block_compressor(gzip_block_compressor&&) noexcept;
  gzip_block_compressor& operator=(gzip_block_compressor&&) noexcept;
  ~gzip_block_compressor();

  // Appends one gzip member holding `in` to `out` (growing it as needed).
  void compress(std::string_view in, buffer& out);
  // The most bytes compress() can append for n input bytes.
  [[nodiscard]] std::size_t bound(std::size_t n) const noexcept;
  [[nodiscard]] deflate_engine engine() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// The engine `automatic` resolves to at this level.
[[nodiscard]] deflate_engine resolve_engine(int level, deflate_engine e) noexcept;

struct gzip_options {
  int level = 6;
  std::size_t chunk = kChunk;  // output buffer size
};
// What a gunzip stage found, filled in by its thread as it ends.
struct gunzip_report {
  std::uint64_t members = 0;                           // complete members decoded
  std::optional<std::uint64_t> trailing_garbage_at;    // ignored trailing garbage began here
  std::exception_ptr error;                            // the deferred error (defer_errors)
};
struct gunzip_options {
  std::size_t chunk = kChunk;                  // output buffer size
  bool ignore_trailing_garbage = false;        // as gzip(1): data, then a warning (see above)
  bool defer_errors = false;                   // push what was decoded, store the error (see above)
  std::shared_ptr<gunzip_report> report = {};  // where the stage reports; required by defer_errors
};
struct parallel_gzip_options {
  int level = 6;
  std::size_t jobs = 0;                         // compressing threads; 0: hardware threads
  std::size_t block = std::size_t{128} << 10;   // input bytes per gzip member
  deflate_engine engine = deflate_engine::automatic;
};

// f(receiver<buffer>&, sender<buffer>&, std::stop_token) for each stage.
class gzip_stage {
 public:
  explicit gzip_stage(gzip_options o);
  void operator()(receiver<buffer>& in, sender<buffer>& out, std::stop_token stop) const;

 private:
  gzip_options options_;
};
class gunzip_stage {
 public:
  explicit gunzip_stage(gunzip_options o);
  void operator()(receiver<buffer>& in, sender<buffer>& out, std::stop_token stop) const;

 private:
  gunzip_options options_;
};
// Descriptors for sluice::pipeline / graph. Default names "gzip", "gunzip"; a capacity
// left at its default becomes kByteBudget bytes.
through_stage<buffer, gzip_stage> gzip(gzip_options o = {}, stage_options s = {});
// io::gzip(level): the level alone.
through_stage<buffer, gzip_stage> gzip(int level, stage_options s = {});
through_stage<buffer, gunzip_stage> gunzip(gunzip_options o = {}, stage_options s = {});

// parallel_gzip as a pipeline descriptor: sluice::pipeline adds its stages (see above)
// where it stands. options.name is the stages' prefix (default "gzip"), options.capacity
// the budget of its output channel (default kByteBudget bytes), options.on_close runs
// when P.deflate ends; `jobs` sets the replicas, so replicas, ordered and on_error must
// stay at their defaults (std::invalid_argument otherwise: a skipped block would be a
// silently shorter file). A bad level or a block of 0 bytes or over 4 GiB - 1 (one zlib
// call) is std::invalid_argument here.
struct parallel_gzip_stages {
  parallel_gzip_options gzip;
  stage_options options;
};
parallel_gzip_stages parallel_gzip(parallel_gzip_options o = {}, stage_options s = {});

// Adds parallel_gzip's stages to g after `in`; returns the stream of gzip members.
stream<buffer> parallel_gzip(graph& g, stream<buffer> in, parallel_gzip_options o = {}, stage_options s = {});

// How sluice::pipeline picks up a parallel_gzip_stages descriptor (argument-dependent
// lookup of its step function, next to the step functions of the stage kinds).
template <std::size_t Index, class G, class In>
  requires std::is_same_v<In, stream<buffer>>
auto pipe_add(G& g, In in, parallel_gzip_stages&& d) {
  return parallel_gzip(g, std::move(in), std::move(d.gzip), std::move(d.options));
}

namespace detail {
// parallel_gzip with `deflate` in place of the block compressor in P.deflate (each
// replica calls its own copy): how the tests make a block fail.
stream<buffer> parallel_gzip_with(graph& g, stream<buffer> in, parallel_gzip_options o, stage_options s,
                                  std::function<buffer(buffer)> deflate);
}  // namespace detail

}  // namespace sluice::io
