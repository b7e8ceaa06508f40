#pragma once
// Header-only (the default) or separate compilation.
//
// By default every function of pqscope is defined in the headers, inline. A
// program with several translation units can instead compile the library's
// non-template code once: define PQSCOPE_SEPARATE_COMPILATION for every
// translation unit (e.g. on the compiler's command line), and in exactly one of
// them also define PQSCOPE_IMPLEMENTATION before including pqscope:
//
//     // pqscope.cpp
//     #define PQSCOPE_IMPLEMENTATION
//     #include <pqscope/pqscope.hpp>
//
// The other translation units then see declarations only. CMake users can link
// pqscope::compiled instead, which does both. The two modes must not be mixed in
// one program.
//
// PQSCOPE_DECL marks the definitions that move to that one translation unit:
// `inline` in header-only mode, nothing in separate compilation.

#if defined(PQSCOPE_SEPARATE_COMPILATION)
#define PQSCOPE_DECL
#else
#define PQSCOPE_DECL inline
#endif
