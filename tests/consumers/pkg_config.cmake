# cmake -P script: compile consumers with nothing but the flags pkg-config gives for the
# installed pqscope.pc, then run them with --version:
#   main.cpp       with the compiler's default standard
#   asio_main.cpp  with the user's own -std=c++20 first, which the flags must not undo
#                  (asio.hpp refuses anything older), and Boost's headers
#   -DPKG_CONFIG= -DPC_DIR= -DCXX= -DSOURCE= -DASIO_SOURCE= -DBOOST_INCLUDE= -DOUT= -DVERSION=
cmake_minimum_required(VERSION 3.16)
set(ENV{PKG_CONFIG_PATH} "${PC_DIR}")
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs pqscope
  RESULT_VARIABLE rc OUTPUT_VARIABLE flags ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config --cflags --libs pqscope failed (${rc}) with PKG_CONFIG_PATH=${PC_DIR}:\n${err}")
endif()
message(STATUS "pkg-config: ${flags}")
separate_arguments(flags UNIX_COMMAND "${flags}")

set(boost_flags "")
foreach(dir IN LISTS BOOST_INCLUDE)
  # -I on a system folder would break the standard library's #include_next
  if(NOT dir MATCHES "^/usr(/local)?/include/?$")
    list(APPEND boost_flags "-I${dir}")
  endif()
endforeach()

foreach(program consumer consumer_asio)
  if(program STREQUAL "consumer")
    set(cmd ${CXX} ${SOURCE} ${flags} -o ${OUT})
    set(binary ${OUT})
  else()
    set(cmd ${CXX} -std=c++20 ${ASIO_SOURCE} ${boost_flags} ${flags} -o ${OUT}_asio)
    set(binary ${OUT}_asio)
  endif()
  execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  list(JOIN cmd " " cmdline)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "compiling with the pkg-config flags failed (${rc}):\n${cmdline}\n${out}")
  endif()
  execute_process(COMMAND ${binary} --version ${VERSION} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${binary} --version ${VERSION} failed (${rc}):\n${out}")
  endif()
  message(STATUS "ran: ${out}")
endforeach()
