// The one translation unit of pqscope::compiled (separate compilation: see
// include/pqscope/detail/config.hpp). PQSCOPE_SEPARATE_COMPILATION comes from
// the target, for this file and for everything that links it.
#define PQSCOPE_IMPLEMENTATION
#include <pqscope/pqscope.hpp>
