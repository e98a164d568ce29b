# `cmake --install` puts headers, libsluice (and libsluice_io) and a sluiceConfig.cmake in
# place, so that an installed sluice is found with
#   find_package(sluice CONFIG REQUIRED)                    # sluice::sluice, and sluice::io if zlib and libdeflate are found
#   find_package(sluice CONFIG REQUIRED COMPONENTS core)    # sluice::sluice only: zlib and libdeflate are never looked up
#   find_package(sluice CONFIG REQUIRED COMPONENTS core io) # both, io required
#   find_package(sluice CONFIG REQUIRED COMPONENTS serve)   # sluice::serve (metrics::serve), needs cpp-httplib
# Included only when SLUICE_INSTALL is ON (the default only when sluice is the top-level
# project), so an embedder's own `cmake --install` installs nothing of sluice's.
include(CMakePackageConfigHelpers)
install(TARGETS sluice EXPORT sluiceTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT sluiceTargets NAMESPACE sluice:: FILE sluiceTargets.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)
if(TARGET sluice_io)
  # Its own export set, loaded by sluiceConfig.cmake only for the io component.
  install(TARGETS sluice_io EXPORT sluiceIoTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT sluiceIoTargets NAMESPACE sluice:: FILE sluiceIoTargets.cmake
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)
  install(DIRECTORY include/sluice DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
else()
  install(DIRECTORY include/sluice DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} PATTERN io EXCLUDE)
endif()
if(TARGET sluice_serve)
  # sluice::serve (the live view): its own export set, loaded for the serve component.
  # Its link interface names PkgConfig::HTTPLIB, which sluiceConfig.cmake recreates.
  install(TARGETS sluice_serve EXPORT sluiceServeTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT sluiceServeTargets NAMESPACE sluice:: FILE sluiceServeTargets.cmake
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)
endif()
if(TARGET sluice_jetstream)
  # sluice::jetstream (edges over NATS JetStream): its own export set, loaded for the
  # jetstream component. Its link interface names PkgConfig::LIBNATS, recreated by
  # sluiceConfig.cmake.
  install(TARGETS sluice_jetstream EXPORT sluiceJetstreamTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT sluiceJetstreamTargets NAMESPACE sluice:: FILE sluiceJetstreamTargets.cmake
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)
else()
  foreach(h sluice/jetstream.hpp sluice/jetstream_codec.hpp sluice/detail/jetstream_message.hpp)
    install(CODE "file(REMOVE \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_INCLUDEDIR}/${h}\")")
  endforeach()
endif()
configure_package_config_file(cmake/sluiceConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/sluiceConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/sluiceConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/sluiceConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/sluiceConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)
