#include <pqscope/pqscope.hpp>
int main() { return 0; }
