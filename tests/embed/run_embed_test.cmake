# Configures, builds and runs tests/embed in MODE under WORK:
#   subdirectory       add_subdirectory(sluice) in a parent configured with no build type:
#                      only the libraries are defined, the parent's CMAKE_BUILD_TYPE stays
#                      empty, sluice::sluice's link line has no zlib/libdeflate while
#                      embedder_io's has both; the parent's `cmake --install` installs its
#                      own programs and nothing of sluice's (SLUICE_INSTALL is OFF).
#   subdirectory_core  the same with -DSLUICE_BUILD_IO=OFF: zlib and libdeflate are never
#                      looked up and sluice::io does not exist.
#   package            sluice built and installed on its own, then two embedders:
#                      find_package(sluice COMPONENTS core io) (both programs), and
#                      find_package(sluice COMPONENTS core), which must not look up zlib.
cmake_minimum_required(VERSION 3.25)  # policies for script mode (IN_LIST)
file(REMOVE_RECURSE ${WORK})

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

# The link command of `target` in the Ninja build `dir`.
function(link_line dir target out)
  run("ninja -t commands ${target}" ninja -C ${dir} -t commands ${target})
  string(REGEX REPLACE "\n$" "" cmds "${last_output}")
  string(REGEX REPLACE "^.*\n" "" last "${cmds}")
  set(${out} "${last}" PARENT_SCOPE)
endfunction()

function(check_links dir with_io)
  link_line(${dir} embedder core)
  if(core MATCHES "libz\\.|-lz( |$)|deflate|sluice_io")
    message(FATAL_ERROR "embedder links only sluice::sluice, yet its link line has zlib/libdeflate/sluice_io:\n${core}")
  endif()
  if(with_io)
    link_line(${dir} embedder_io io)
    if(NOT io MATCHES "libz\\.|-lz( |$)" OR NOT io MATCHES "deflate" OR NOT io MATCHES "sluice_io")
      message(FATAL_ERROR "embedder_io's link line lacks sluice_io, zlib or libdeflate:\n${io}")
    endif()
  endif()
endfunction()

function(build_and_run app with_io)
  run("building the embedder (${MODE})" ${CMAKE_COMMAND} --build ${app})
  run("running embedder (${MODE})" ${app}/embedder)
  if(with_io)
    run("running embedder_io (${MODE})" ${app}/embedder_io)
  endif()
  check_links(${app} ${with_io})
endfunction()

if(MODE MATCHES "^subdirectory")
  set(with_io ON)
  set(extra)
  if(MODE STREQUAL "subdirectory_core")
    set(with_io OFF)
    set(extra -DSLUICE_BUILD_IO=OFF)
  endif()
  # No CMAKE_BUILD_TYPE on purpose: sluice must not choose one for us.
  run("configuring the embedder (${MODE})"
      ${CMAKE_COMMAND} -S ${SLUICE_SOURCE_DIR}/tests/embed -B ${WORK}/app -G Ninja
      -DSLUICE_MODE=subdirectory -DSLUICE_WITH_IO=${with_io} -DSLUICE_SOURCE_DIR=${SLUICE_SOURCE_DIR}
      -DCMAKE_CXX_FLAGS=-O1 -DCMAKE_INSTALL_PREFIX=${WORK}/prefix ${extra})
  build_and_run(${WORK}/app ${with_io})
  run("installing the embedder (${MODE})" ${CMAKE_COMMAND} --install ${WORK}/app)
  file(GLOB_RECURSE installed RELATIVE ${WORK}/prefix ${WORK}/prefix/*)
  set(want bin/embedder)
  if(with_io)
    list(APPEND want bin/embedder_io)
  endif()
  list(SORT installed)
  if(NOT installed STREQUAL want)
    message(FATAL_ERROR "the parent's install should put only '${want}' in place, it installed: ${installed}")
  endif()
elseif(MODE STREQUAL "package")
  run("configuring sluice for install"
      ${CMAKE_COMMAND} -S ${SLUICE_SOURCE_DIR} -B ${WORK}/sluice-build -G Ninja
      -DCMAKE_BUILD_TYPE=Release -DSLUICE_BUILD_TESTS=OFF
      -DSLUICE_BUILD_BENCHMARKS=OFF -DSLUICE_BUILD_TOOLS=OFF
      -DCMAKE_INSTALL_PREFIX=${WORK}/prefix)
  run("building and installing sluice" ${CMAKE_COMMAND} --build ${WORK}/sluice-build --target install)
  foreach(f include/sluice/channel.hpp include/sluice/io/gzip.hpp lib/cmake/sluice/sluiceConfig.cmake
            lib/cmake/sluice/sluiceTargets.cmake lib/cmake/sluice/sluiceIoTargets.cmake)
    if(NOT EXISTS ${WORK}/prefix/${f})
      message(FATAL_ERROR "cmake --install of sluice did not install ${f}")
    endif()
  endforeach()
  foreach(name core_io core)
    if(name STREQUAL "core_io")
      set(comps "core,io")  # commas: a ';' would split the argument in run()
      set(with_io ON)
    else()
      set(comps "core")
      set(with_io OFF)
    endif()
    run("configuring the embedder (package, COMPONENTS ${comps})"
        ${CMAKE_COMMAND} -S ${SLUICE_SOURCE_DIR}/tests/embed -B ${WORK}/app-${name} -G Ninja
        -DCMAKE_BUILD_TYPE=Release -DSLUICE_MODE=package "-DSLUICE_COMPONENTS=${comps}"
        -DSLUICE_WITH_IO=${with_io} -DCMAKE_PREFIX_PATH=${WORK}/prefix)
    build_and_run(${WORK}/app-${name} ${with_io})
  endforeach()
else()
  message(FATAL_ERROR "unknown MODE '${MODE}'")
endif()
