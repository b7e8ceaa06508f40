# cmake -P script: every header under include/pqscope compiles on its own, so that a
# file can be read (and included) without knowing what came before it. Declarations
# headers are compiled as a separately compiled unit sees them (PQSCOPE_SEPARATE_COMPILATION);
# each .ipp as the implementation unit sees it (PQSCOPE_IMPLEMENTATION), which also
# compiles the bodies it reaches. asio/ needs C++20 and Boost; the rest C++17.
#
#   -DROOT=<source tree>  -DCXX=<compiler>  -DPG_INCLUDE=<libpq's include dir>  -DOUT=<dir>
cmake_minimum_required(VERSION 3.16)
foreach(var ROOT CXX PG_INCLUDE OUT)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "self_contained.cmake: pass -D${var}=...")
  endif()
endforeach()
file(MAKE_DIRECTORY "${OUT}")
file(GLOB_RECURSE headers RELATIVE "${ROOT}/include" "${ROOT}/include/pqscope/*.hpp" "${ROOT}/include/pqscope/*.ipp")
list(SORT headers)
set(failed "")
set(count 0)
foreach(h IN LISTS headers)
  set(std 17)
  if(h MATCHES "^pqscope/asio")
    set(std 20)
  endif()
  set(mode -DPQSCOPE_SEPARATE_COMPILATION)
  if(h MATCHES "\\.ipp$")
    list(APPEND mode -DPQSCOPE_IMPLEMENTATION)
  endif()
  string(MAKE_C_IDENTIFIER "${h}" id)
  file(WRITE "${OUT}/${id}.cpp" "#include <${h}>\n")
  execute_process(
    COMMAND "${CXX}" -std=c++${std} -fsyntax-only -Wall -Wextra ${mode} -I${ROOT}/include -isystem ${PG_INCLUDE}
      "${OUT}/${id}.cpp"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  math(EXPR count "${count} + 1")
  if(NOT rc EQUAL 0 OR NOT out STREQUAL "")
    list(APPEND failed "${h}")
    message("---- ${h} does not compile on its own:\n${out}")
  endif()
endforeach()
if(failed)
  message(FATAL_ERROR "not self-contained: ${failed}")
endif()
message(STATUS "${count} headers compile on their own")
