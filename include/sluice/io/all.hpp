// sluice/io/all.hpp — every byte-stream stage in one include.
//
//   #include <sluice/io/all.hpp>
//   namespace io = sluice::io;
//   sluice::pipeline(io::read_file("a.log"), io::gzip(), io::write_file("a.log.gz")).run();
//
// Requires / Guarantees / Lifetime: see each header (buffer.hpp, io/file.hpp,
// io/gzip.hpp, io/lines.hpp, io/tcp.hpp).
#pragma once

#include "sluice/buffer.hpp"
#include "sluice/io/error.hpp"
#include "sluice/io/file.hpp"
#include "sluice/io/gzip.hpp"
#include "sluice/io/lines.hpp"
#include "sluice/io/tcp.hpp"
