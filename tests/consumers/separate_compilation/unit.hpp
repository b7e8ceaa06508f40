#pragma once
#include <pqscope/pqscope.hpp>

#include <string>

long move_money(pqscope::connection& c, int from, int to, long cents);
// The message of the connection_error from connecting where no server is; empty if none was thrown.
std::string refused_connect();
