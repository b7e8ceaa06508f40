// Including libpqxx and nothing else: the reference for the single header's cost.
#include <pqxx/pqxx>
int main() { return 0; }
