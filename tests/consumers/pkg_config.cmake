# cmake -P script: compile the consumer with nothing but the flags pkg-config gives
# for the installed pqscope.pc, then run it with --version.
#   -DPKG_CONFIG= -DPC_DIR= -DCXX= -DSOURCE= -DOUT= -DVERSION=
cmake_minimum_required(VERSION 3.16)
set(ENV{PKG_CONFIG_PATH} "${PC_DIR}")
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs pqscope
  RESULT_VARIABLE rc OUTPUT_VARIABLE flags ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config --cflags --libs pqscope failed (${rc}) with PKG_CONFIG_PATH=${PC_DIR}:\n${err}")
endif()
message(STATUS "pkg-config: ${flags}")
separate_arguments(flags UNIX_COMMAND "${flags}")
execute_process(COMMAND ${CXX} ${SOURCE} ${flags} -o ${OUT}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "compiling with the pkg-config flags failed (${rc}):\n${out}")
endif()
execute_process(COMMAND ${OUT} --version ${VERSION} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${OUT} --version ${VERSION} failed (${rc}):\n${out}")
endif()
message(STATUS "ran: ${out}")
