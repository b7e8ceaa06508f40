// A second translation unit that uses pqscope, in the mode its program's target gives
// it. Nothing calls it: linked in, it is part of the program all the same.
#include <pqscope/pqscope.hpp>

#include <string>

std::string other_conninfo();
std::string other_conninfo() { return pqscope::database{"host=/nonexistent-pqscope-socket-dir port=1"}.conninfo(); }
