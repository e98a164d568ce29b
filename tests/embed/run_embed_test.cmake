# Configures, builds and runs tests/embed in MODE (subdirectory | package) under WORK.
file(REMOVE_RECURSE ${WORK})
if(MODE STREQUAL "package")
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${SLUICE_SOURCE_DIR} -B ${WORK}/sluice-build -G Ninja
                          -DCMAKE_BUILD_TYPE=Release -DSLUICE_BUILD_TESTS=OFF
                          -DSLUICE_BUILD_BENCHMARKS=OFF -DSLUICE_BUILD_TOOLS=OFF
                          -DCMAKE_INSTALL_PREFIX=${WORK}/prefix RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "configuring sluice for install failed")
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/sluice-build --target install RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "cmake --install of sluice failed")
  endif()
  set(extra -DCMAKE_PREFIX_PATH=${WORK}/prefix)
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SLUICE_SOURCE_DIR}/tests/embed -B ${WORK}/app -G Ninja
                        -DCMAKE_BUILD_TYPE=Release -DSLUICE_MODE=${MODE}
                        -DSLUICE_SOURCE_DIR=${SLUICE_SOURCE_DIR} ${extra} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the embedder (${MODE}) failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/app RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the embedder (${MODE}) failed")
endif()
execute_process(COMMAND ${WORK}/app/embedder RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the embedder (${MODE}) ran and failed: ${rc}")
endif()
