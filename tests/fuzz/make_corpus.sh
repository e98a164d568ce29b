#!/usr/bin/env bash
# tests/fuzz/make_corpus.sh — writes the seed corpora under tests/fuzz/corpus/ (committed;
# `./dev test` replays them, `./dev fuzz` starts from them). Needs bash, gzip and od.
# Re-running it rewrites the seeds it makes and leaves every other file alone (regression
# inputs saved from fuzzing runs: crash-*, found-*).
#
# Each target reads a few control bytes before its payload (see the target's header):
#   gunzip  byte 0: output room (low 5 bits, x256 B), bit 5: ignore_trailing_garbage
#           (top 3 bits set: round-trip mode instead),
#           byte 1: input piece size (0: whole) or, in round-trip mode, the level
#   lines   bytes 0-1: max_line (LE; 0xffff = SIZE_MAX), byte 2: chunk size (0: whole)
#   args    NUL-separated arguments
set -euo pipefail
cd "$(dirname "$0")"
out=corpus
mkdir -p "$out/gunzip" "$out/lines" "$out/args"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Some text: numbers and words, compressible like a log.
for i in $(seq 1 400); do printf 'line %d: the quick brown fox %x\n' "$i" $((i * 7919)); done > "$tmp/text"
printf 'hello\n' > "$tmp/hello"
gzip -1 -n -c "$tmp/text" > "$tmp/t1.gz"
gzip -9 -n -c "$tmp/text" > "$tmp/t9.gz"
gzip -n -c "$tmp/hello" > "$tmp/h.gz"
cp "$tmp/hello" "$tmp/named"; touch -d @1600000000 "$tmp/named"; gzip -9 -f "$tmp/named"  # FNAME, a fixed mtime
: > "$tmp/empty"; gzip -n -c "$tmp/empty" > "$tmp/e.gz"

g() {  # g NAME B0 B1 FILES...: control bytes, then the files' bytes
  local name=$1 b0=$2 b1=$3
  shift 3
  { printf "\\x$b0\\x$b1"; cat "$@"; } > "$out/gunzip/$name"
}
g single-1 00 00 "$tmp/t1.gz"
g single-9 1f 00 "$tmp/t9.gz"
g single-9-pieces 00 07 "$tmp/t9.gz"
g hello 00 00 "$tmp/h.gz"
g named 00 03 "$tmp/named.gz"
g empty-member 00 00 "$tmp/e.gz"
g multi 00 00 "$tmp/h.gz" "$tmp/t1.gz" "$tmp/e.gz" "$tmp/h.gz"
g multi-pieces 02 01 "$tmp/t1.gz" "$tmp/h.gz"
{ cat "$tmp/h.gz"; printf 'GARBAGE\n'; } > "$tmp/garbage"; g garbage 00 00 "$tmp/garbage"
{ cat "$tmp/h.gz"; printf '\x1f\x00abc'; } > "$tmp/garbage-magic"; g garbage-magic 00 00 "$tmp/garbage-magic"
{ cat "$tmp/h.gz"; printf '\x1f'; } > "$tmp/half-magic"; g half-magic 00 00 "$tmp/half-magic"
{ cat "$tmp/h.gz"; head -c 100 /dev/zero; } > "$tmp/zeros"; g zero-padding 00 05 "$tmp/zeros"
{ cat "$tmp/h.gz"; head -c 8 /dev/zero; cat "$tmp/h.gz"; } > "$tmp/zeros-member"; g zeros-then-member 00 00 "$tmp/zeros-member"
{ cat "$tmp/t1.gz"; printf 'x'; } > "$tmp/t1x"; g member-then-x 01 00 "$tmp/t1x"
# The same junk with ignore_trailing_garbage (byte 0 bit 5).
g garbage-ignored 20 00 "$tmp/garbage"
g garbage-magic-ignored 20 00 "$tmp/garbage-magic"
g half-magic-ignored 20 00 "$tmp/half-magic"
g zeros-then-member-ignored 20 03 "$tmp/zeros-member"
g member-then-x-ignored 21 00 "$tmp/t1x"
head -c 40 "$tmp/t9.gz" > "$tmp/trunc"; g truncated 00 00 "$tmp/trunc"
head -c $(($(wc -c < "$tmp/t1.gz") - 4)) "$tmp/t1.gz" > "$tmp/no-isize"; g truncated-trailer 00 00 "$tmp/no-isize"
# A wrong CRC: flip the first trailer byte.
size=$(wc -c < "$tmp/h.gz")
{ head -c $((size - 8)) "$tmp/h.gz"; printf '\xff'; tail -c 7 "$tmp/h.gz"; } > "$tmp/badcrc"; g bad-crc 00 00 "$tmp/badcrc"
# Hand-built header with FEXTRA, FNAME and FCOMMENT around hello's deflate data.
{ printf '\x1f\x8b\x08\x1c\x00\x00\x00\x00\x00\x03\x04\x00ab\x01\x00name\x00comment\x00'; tail -c +11 "$tmp/h.gz"; } > "$tmp/hdr"
g header-fields 00 00 "$tmp/hdr"
g empty 00 00 "$tmp/empty"
printf '\x00\x00\x00\x00' > "$tmp/z4"; g zeros-only 00 00 "$tmp/z4"
printf '\x1f\x9d\x90hi' > "$tmp/compress"; g compress-format 00 00 "$tmp/compress"
# Round-trip mode: the payload is compressed by io::gzip_encoder, then decoded.
g roundtrip-6 e0 06 "$tmp/text"
g roundtrip-0 e0 00 "$tmp/hello"
g roundtrip-9-empty ff 09 "$tmp/empty"

l() {  # l NAME MAXLO MAXHI PIECE TEXT(printf format)
  { printf "\\x$2\\x$3\\x$4"; printf "$5"; } > "$out/lines/$1"
}
l crlf 64 00 00 'a\r\nb\nc'
l crlf-split 64 00 01 'ab\r\ncd\r\n\r\nlast\r'
l lone-cr 10 00 02 'a\rb\n\r'
l empty 10 00 00 ''
l newline 00 00 00 '\n'
l over 03 00 00 'abc\nabcd\nab\n'
l over-split 03 00 02 'abc\r\nabcd'
l exact-cr 03 00 03 'abc\r\nxyz\r'
l zero-max 00 00 01 '\n\n\r\nx'
l max-size ff ff 02 'spans chunks\nand no newline'
l max-size-1 fe ff 05 'abc\r\ndef'
head -c 3000 "$tmp/text" > "$tmp/text3k"
{ printf '\x00\x02\x00'; cat "$tmp/text3k"; } > "$out/lines/text"       # max_line 512
{ printf '\x1c\x00\x11'; cat "$tmp/text3k"; } > "$out/lines/text-tight" # max_line 28, 17-byte chunks

a() {  # a NAME ARGS...: NUL-separated
  local name=$1
  shift
  local first=1
  : > "$out/args/$name"
  for x in "$@"; do
    [ $first = 1 ] || printf '\0' >> "$out/args/$name"
    printf '%s' "$x" >> "$out/args/$name"
    first=0
  done
}
a plain in.txt out.txt
a sizes --size 512MiB --size=1.5GiB in --rate 100MiB/s --count 10k --duration 2.5ms
a flags --flag in --text hello --custom tbb
a dashdash in -- --flag
a help --help
a unknown --nope in
a missing --size
a bad-size --size 12XB in
a huge --size 99999999999T in
a negative --count -5 in
a flag-value --flag=1 in
a empty-text --text= in
a dash -
a too-many a b c
a units --duration 1h --duration 500us --duration 0 --size 10MB --size 4096 x
