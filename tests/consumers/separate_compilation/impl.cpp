// The one translation unit that defines pqscope's non-template code.
#define PQSCOPE_IMPLEMENTATION
#include <pqscope/pqscope.hpp>
