# cmake -P script: misuse that pqscope refuses at compile time must stay refused.
#
#   -DSOURCE=<file.cpp>      lists its cases in lines "// case <name>: <expected message>"
#   -DCXX=<compiler>         -DSTD=<17|20>
#   -DINCLUDE_DIRS=<a;b;...> passed with -I
#   -DOUT=<dir>              logs go here
#
# Each case is compiled twice with -fsyntax-only: with -DPQSCOPE_CASE_<name> it must
# fail with one error that prints the expected message (so the failure is pqscope's
# refusal, not some other error, and not buried in follow-on errors); with
# -DPQSCOPE_OK as well, the correct code next to the misuse must compile (so the
# snippet itself is sound, and the refusal is no broader than meant).
cmake_minimum_required(VERSION 3.16)

foreach(var SOURCE CXX STD INCLUDE_DIRS OUT)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "compile_fail.cmake: pass -D${var}=...")
  endif()
endforeach()
file(MAKE_DIRECTORY "${OUT}")
get_filename_component(stem "${SOURCE}" NAME_WE)

set(include_flags "")
foreach(dir IN LISTS INCLUDE_DIRS)
  if(NOT dir STREQUAL "" AND NOT dir MATCHES "^/usr(/local)?/include/?$")
    list(APPEND include_flags "-I${dir}")
  endif()
endforeach()

file(STRINGS "${SOURCE}" case_lines REGEX "^// case [A-Za-z0-9_]+: ")
if(NOT case_lines)
  message(FATAL_ERROR "compile_fail.cmake: ${SOURCE} lists no cases")
endif()

set(failures "")
foreach(line IN LISTS case_lines)
  string(REGEX REPLACE "^// case ([A-Za-z0-9_]+): (.*)$" "\\1" name "${line}")
  string(REGEX REPLACE "^// case ([A-Za-z0-9_]+): (.*)$" "\\2" expected "${line}")
  set(cmd "${CXX}" -std=c++${STD} -fsyntax-only ${include_flags} -DPQSCOPE_CASE_${name} "${SOURCE}")

  execute_process(COMMAND ${cmd} -DPQSCOPE_OK RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  file(WRITE "${OUT}/${stem}-${name}-ok.log" "${out}")
  if(NOT rc EQUAL 0)
    string(APPEND failures "\n==== ${name}: the correct code does not compile (-DPQSCOPE_OK)\n${out}")
    continue()
  endif()

  execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  file(WRITE "${OUT}/${stem}-${name}.log" "${out}")
  string(FIND "${out}" "${expected}" at)
  string(REGEX MATCHALL "error: " errors "${out}")
  list(LENGTH errors error_count)
  if(rc EQUAL 0)
    string(APPEND failures "\n==== ${name}: the misuse compiles")
  elseif(at EQUAL -1)
    string(APPEND failures "\n==== ${name}: refused, but without \"${expected}\"\n${out}")
  elseif(NOT error_count EQUAL 1)
    string(APPEND failures "\n==== ${name}: refused with ${error_count} errors instead of one\n${out}")
  else()
    message(STATUS "ok   ${name}")
  endif()
endforeach()

if(NOT failures STREQUAL "")
  string(REPLACE "\n" "\n  " failures "${failures}")
  message(FATAL_ERROR "compile-time refusals (logs in ${OUT}):${failures}")
endif()
