# cmake -P script: SOURCE must compile warning-free with g++ and clang++, in
# C++17 and C++20, under -Wall -Wextra -Wpedantic -Werror.
#
#   -DSOURCE=<file.cpp>      translation unit that includes the headers
#   -DSTANDARDS=<17;20>      the standards to check (default both; pqscope/asio.hpp: 20)
#   -DINCLUDE_DIRS=<a;b;...> a directory holding pqscope/pqscope.hpp is passed with -I
#                            (its warnings count); any other (libpq's) with -isystem
#   -DOUT=<dir>              object files and logs go here
#
# g++ must be present; clang++ is checked when found.
cmake_minimum_required(VERSION 3.16)

foreach(var SOURCE INCLUDE_DIRS OUT)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "warnings.cmake: pass -D${var}=...")
  endif()
endforeach()
if(NOT EXISTS "${SOURCE}")
  message(FATAL_ERROR "warnings.cmake: ${SOURCE} does not exist")
endif()
file(MAKE_DIRECTORY "${OUT}")
if(NOT DEFINED STANDARDS OR "${STANDARDS}" STREQUAL "")
  set(STANDARDS 17 20)
endif()
list(GET STANDARDS 0 first_standard)

set(include_flags "")
foreach(dir IN LISTS INCLUDE_DIRS)
  if(dir STREQUAL "")
    continue()
  elseif(EXISTS "${dir}/pqscope/pqscope.hpp")
    list(APPEND include_flags "-I${dir}")
  elseif(dir MATCHES "^/usr(/local)?/include/?$")
    # Already a system directory; -isystem on it would reorder the search path and
    # break libstdc++'s #include_next.
  else()
    list(APPEND include_flags "-isystem" "${dir}")
  endif()
endforeach()

set(warning_flags -Wall -Wextra -Wpedantic -Werror)

find_program(GXX NAMES g++)
find_program(CLANGXX NAMES clang++)
if(NOT GXX)
  message(FATAL_ERROR "warnings.cmake: g++ not found")
endif()
set(compilers gcc "${GXX}")
if(CLANGXX)
  list(APPEND compilers clang "${CLANGXX}")
else()
  message(STATUS "clang++ not found: checking with g++ only")
endif()

set(failures "")
list(LENGTH compilers n)
math(EXPR last "${n} - 1")
foreach(i RANGE 0 ${last} 2)
  math(EXPR j "${i} + 1")
  list(GET compilers ${i} tag)
  list(GET compilers ${j} cxx)
  foreach(std IN LISTS STANDARDS)
    if(tag STREQUAL "gcc" AND std EQUAL first_standard)
      # Some of g++'s warnings (-Wnonnull-compare, -Wmaybe-uninitialized, the
      # -Wstringop-* family) come from the optimizer, which -fsyntax-only skips.
      # One optimized build is enough for those: the rest come from the front end.
      set(mode -O2 -c -o "${OUT}/${tag}-cxx${std}.o")
    else()
      # Templates are still instantiated, so their front-end warnings show.
      set(mode -fsyntax-only)
    endif()
    set(cmd "${cxx}" -std=c++${std} ${warning_flags} ${mode} ${include_flags} "${SOURCE}")
    string(TIMESTAMP t0 "%s")
    execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
    string(TIMESTAMP t1 "%s")
    math(EXPR secs "${t1} - ${t0}")
    file(WRITE "${OUT}/${tag}-cxx${std}.log" "${out}")
    list(JOIN cmd " " cmdline)
    if(NOT rc EQUAL 0)
      message(STATUS "FAIL ${tag} C++${std} (${secs} s)")
      string(APPEND failures "\n==== ${tag} C++${std}: ${cmdline}\n${out}")
    elseif(NOT out STREQUAL "")
      # -Werror turns warnings into errors, but a note or a remark still means something changed.
      message(STATUS "FAIL ${tag} C++${std} (${secs} s): compiled, but printed diagnostics")
      string(APPEND failures "\n==== ${tag} C++${std}: ${cmdline}\n${out}")
    else()
      message(STATUS "ok   ${tag} C++${std} (${secs} s)")
    endif()
  endforeach()
endforeach()

if(NOT failures STREQUAL "")
  # Indented lines are printed as they are; the rest of a FATAL_ERROR text is re-wrapped.
  string(REPLACE "\n" "\n  " failures "${failures}")
  message(FATAL_ERROR "the headers do not compile warning-free (logs in ${OUT}):${failures}")
endif()
