# cmake -P script: configure and build one project from scratch, then optionally
# install it or run a program it built. Used by the consumer tests.
#
#   -DSOURCE_DIR= -DBINARY_DIR=       the project and a build directory (wiped first)
#   -DGENERATOR= -DMAKE_PROGRAM= -DCXX=  the outer build's, so both builds agree
#   -DOPTIONS=<-Dx=y;...>             extra configure options
#   -DINSTALL_PREFIX=<dir>            then `cmake --install --prefix` there (wiped first); the
#                                     prefix is given at install time only, as the README does
#   -DRUN=<program;args...>           then run this program from BINARY_DIR
#   -DRUN_FAILS=<text>                the program must fail instead, printing this text
cmake_minimum_required(VERSION 3.16)

foreach(var SOURCE_DIR BINARY_DIR GENERATOR CXX)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: pass -D${var}=...")
  endif()
endforeach()

function(step what)
  string(TIMESTAMP t0 "%s")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  string(TIMESTAMP t1 "%s")
  math(EXPR secs "${t1} - ${t0}")
  list(JOIN ARGN " " cmdline)
  if(NOT rc EQUAL 0)
    # Indented lines keep their layout in a FATAL_ERROR message.
    string(REPLACE "\n" "\n  " out "${out}")
    message(FATAL_ERROR "${what} failed (${rc}) after ${secs} s:\n  ${cmdline}\n  ${out}")
  endif()
  message(STATUS "${what}: ok (${secs} s)")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

# A fresh directory each run: a cache left from an earlier run could hide a
# problem that a first-time user would hit.
file(REMOVE_RECURSE "${BINARY_DIR}")

set(configure "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${BINARY_DIR}" -G "${GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=Debug)
if(MAKE_PROGRAM)
  list(APPEND configure "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
step("configure" ${configure} ${OPTIONS})
step("build" "${CMAKE_COMMAND}" --build "${BINARY_DIR}" --config Debug)

if(INSTALL_PREFIX)
  file(REMOVE_RECURSE "${INSTALL_PREFIX}")
  step("install" "${CMAKE_COMMAND}" --install "${BINARY_DIR}" --config Debug --prefix "${INSTALL_PREFIX}")
endif()

if(RUN)
  list(POP_FRONT RUN program)
  # Multi-config generators put the program in a per-configuration directory.
  foreach(candidate "${BINARY_DIR}/${program}" "${BINARY_DIR}/Debug/${program}")
    if(EXISTS "${candidate}")
      if(NOT RUN_FAILS)
        step("run ${program}" "${candidate}" ${RUN})
        message(STATUS "${step_output}")
        return()
      endif()
      execute_process(COMMAND "${candidate}" ${RUN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
      string(FIND "${out}" "${RUN_FAILS}" at)
      if(rc EQUAL 0 OR at EQUAL -1)
        message(FATAL_ERROR "${program} should fail with \"${RUN_FAILS}\"; it ended with ${rc}:\n${out}")
      endif()
      message(STATUS "run ${program}: failed as expected (${rc})\n${out}")
      return()
    endif()
  endforeach()
  message(FATAL_ERROR "the build produced no ${program} in ${BINARY_DIR}")
endif()
