#pragma once
// Header-only (the default) or separate compilation: the one place that decides.
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
// pqscope::compiled instead, which does both (src/pqscope.cpp). The two modes must
// not be mixed in one program: one that does stops at startup (build_mode.hpp).
//
// How the headers follow it: `foo.hpp` declares, and the non-template bodies live in
// `impl/foo.ipp`, which `foo.hpp` includes at its end when PQSCOPE_BODIES is
// defined (header-only mode, or the implementation unit). Template bodies are
// in the headers, or in `impl/foo.hpp` when long; the asio front end is header-only.
//
// PQSCOPE_DECL marks the definitions that move to that one translation unit:
// `inline` in header-only mode, nothing in separate compilation.
// PQSCOPE_COMPILED_ONCE(class x<y>) instantiates a template specialization the
// library uses itself in the implementation unit only, and keeps every other
// unit of a separately compiled program from instantiating it again.

#if defined(PQSCOPE_SEPARATE_COMPILATION)
#define PQSCOPE_DECL
#if defined(PQSCOPE_IMPLEMENTATION)
#define PQSCOPE_BODIES
#define PQSCOPE_COMPILED_ONCE(...) template __VA_ARGS__;
#else
#define PQSCOPE_COMPILED_ONCE(...) extern template __VA_ARGS__;
#endif
#else
#define PQSCOPE_DECL inline
#define PQSCOPE_BODIES
#define PQSCOPE_COMPILED_ONCE(...)
#endif

#include <pqscope/detail/build_mode.hpp>
