// Built by an embedding project that links sluice::io: gzip and gunzip in memory, and a
// pipeline of io stages, work.
#include <sluice/io/gzip.hpp>
#include <sluice/io/lines.hpp>

#include <string>
#include <string_view>
#include <vector>

int main() {
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "line " + std::to_string(i) + "\r\n";
  sluice::io::gzip_encoder enc(6);
  sluice::buffer gz(1 << 20);
  std::string_view in = text;
  enc.write(in, gz);
  if (!in.empty() || !enc.finish(gz)) return 1;
  sluice::io::gzip_decoder dec;
  sluice::buffer plain(1 << 20);
  std::string_view z = gz.view();
  if (dec.write(z, plain)) return 2;
  dec.finish();
  sluice::io::line_splitter split(64);
  std::vector<sluice::io::line> lines;
  split.feed(std::move(plain), lines);
  split.finish(lines);
  return lines.size() == 2000 && lines[1999] == "line 1999" ? 0 : 3;
}
