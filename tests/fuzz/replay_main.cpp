// tests/fuzz/replay_main.cpp — runs a fuzz target over committed inputs, without
// libFuzzer: `sluice_fuzz_replay_<target> DIR|FILE...` feeds every regular file (a
// directory's files in name order) to LLVMFuzzerTestOneInput once. A failed property
// aborts (tests/fuzz/fuzz_support.hpp); no input at all is a failure too, so a corpus
// that went missing cannot pass.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const fs::path p = argv[i];
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::directory_iterator(p, ec)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
      if (ec) {
        std::fprintf(stderr, "replay: cannot list %s: %s\n", p.c_str(), ec.message().c_str());
        return 1;
      }
    } else if (fs::is_regular_file(p, ec)) {
      files.push_back(p);
    } else {
      std::fprintf(stderr, "replay: %s is neither a file nor a directory\n", p.c_str());
      return 1;
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "replay: no inputs (usage: %s DIR|FILE...)\n", argc > 0 ? argv[0] : "replay");
    return 1;
  }
  for (const fs::path& f : files) {
    std::vector<std::uint8_t> data;
    std::FILE* in = std::fopen(f.c_str(), "rb");
    if (in != nullptr) {
      std::uint8_t chunk[4096];
      for (std::size_t n; (n = std::fread(chunk, 1, sizeof chunk, in)) > 0;) data.insert(data.end(), chunk, chunk + n);
    }
    if (in == nullptr || std::ferror(in) != 0) {
      std::fprintf(stderr, "replay: cannot read %s\n", f.c_str());
      if (in != nullptr) std::fclose(in);
      return 1;
    }
    std::fclose(in);
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", f.c_str(), data.size());
    // On the heap, exactly the input's size (as libFuzzer passes it), so ASan sees a
    // read past the end; a copy, so a target cannot change the next run's input.
    data.shrink_to_fit();
    (void)LLVMFuzzerTestOneInput(data.data(), data.size());
  }
  std::printf("replayed %zu inputs\n", files.size());
  return 0;
}
