# Every third-party dependency is found here, from Debian's packages, and nowhere else.
find_package(Boost 1.81 REQUIRED COMPONENTS json url system)
find_package(OpenSSL 3 REQUIRED)
find_package(RocksDB REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)
find_package(Threads REQUIRED)
# Avro's deflate codec for storage-container endpoints.
find_package(ZLIB REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(TOMLPP REQUIRED IMPORTED_TARGET tomlplusplus)
# Kafka routing endpoints (the C API; its mock cluster serves the tests).
pkg_check_modules(RDKAFKA REQUIRED IMPORTED_TARGET rdkafka)
# The cluster engine (JetStream) and the nats routing endpoint.
# (Debian's cnats CMake package names a static library it does not ship; pkg-config is right.)
pkg_check_modules(NATS REQUIRED IMPORTED_TARGET libnats)
# AMQP 1.0 framing, sessions and links (the C connection driver; the hub does its own I/O).
# Debian's libqpid-proton.pc points at a wrong prefix, so the library is found directly.
find_path(PROTON_INCLUDE_DIR proton/connection_driver.h REQUIRED)
find_library(PROTON_LIBRARY NAMES qpid-proton REQUIRED)
add_library(proton::proton UNKNOWN IMPORTED)
set_target_properties(proton::proton PROPERTIES IMPORTED_LOCATION ${PROTON_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${PROTON_INCLUDE_DIR})
# The C++ binding, for the command-line client's AMQP service connection only: a client wants a
# ready-made event loop (the container) rather than driving the C engine through the hub's I/O.
find_library(PROTON_CPP_LIBRARY NAMES qpid-proton-cpp REQUIRED)
add_library(proton::cpp UNKNOWN IMPORTED)
set_target_properties(proton::cpp PROPERTIES IMPORTED_LOCATION ${PROTON_CPP_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${PROTON_INCLUDE_DIR})
if(IOTHUB_WITH_JEMALLOC)
  pkg_check_modules(JEMALLOC REQUIRED IMPORTED_TARGET jemalloc)
endif()
if(IOTHUB_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
