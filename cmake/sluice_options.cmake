# Flags for sluice's *own* targets. Nothing here reaches sluice::sluice's interface:
# an embedder never inherits -Werror or a sanitizer from us.
include(GNUInstallDirs)

set(SLUICE_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
                    -Wcast-align -Woverloaded-virtual -Wnull-dereference)
# No -Wthread-safety: nothing carries SLUICE_GUARDED_BY annotations (std::mutex is not an
# annotated capability in libstdc++), so the flag checked nothing; each guarded field
# says in its comment which mutex guards it.

# One sanitizer switch for the whole build (tests, tools and the library alike).
if(SLUICE_SANITIZE)
  set(_san -fsanitize=${SLUICE_SANITIZE} -fno-omit-frame-pointer)
  # A report needs file:line in its stacks. A build type with debug info has them already
  # (and keeps its own -g level: ./dev test builds its sanitizer trees with -g1, line
  # tables only, a quarter less compile time than -g); any other gets line tables.
  if(NOT CMAKE_BUILD_TYPE MATCHES "Deb")
    list(APPEND _san -g1)
  endif()
  if(SLUICE_SANITIZE MATCHES "undefined")
    list(APPEND _san -fno-sanitize-recover=undefined)
  endif()
  add_compile_options(${_san})
  add_link_options(${_san})
  add_compile_definitions(SLUICE_SANITIZER_BUILD=1)
  if(SLUICE_SANITIZE MATCHES "thread")
    add_compile_definitions(SLUICE_TSAN_BUILD=1)
    # GCC warns that TSan does not model atomic_thread_fence. Our fences order the
    # futex wait protocol (no lost wake-up), not data hand-off, which always goes
    # through acquire/release pairs that TSan sees; so the warning is expected here.
    add_compile_options(-Wno-tsan)
  endif()
endif()

# -DSLUICE_FUZZ=ON (clang only; `./dev fuzz`): coverage for libFuzzer in every target,
# and the libFuzzer executables in tests/fuzz.
if(SLUICE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SLUICE_FUZZ needs clang (libFuzzer): configure with CMAKE_CXX_COMPILER=clang++")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
  add_compile_definitions(SLUICE_FUZZ_BUILD=1)
endif()

function(sluice_private_flags target)
  target_compile_options(${target} PRIVATE ${SLUICE_WARNINGS})
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    # runtime/buffer.cpp calls the sized operator delete, which clang (before 19) only
    # declares with this flag; GCC always does.
    target_compile_options(${target} PRIVATE -fsized-deallocation)
  endif()
  if(SLUICE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
