#pragma once
// The bodies of <pqscope/detail/application_name.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/application_name.hpp>

#include <fcntl.h>
#include <pwd.h>
#include <unistd.h>

#include <cstring>

namespace pqscope::detail {

PQSCOPE_DECL std::string cut_utf8(std::string s, std::size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  std::size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  s.resize(n);
  return s;
}

PQSCOPE_DECL std::string program_name() {
  std::string cmdline;
  const int fd = ::open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    if (n > 0) cmdline.assign(buf, ::strnlen(buf, static_cast<std::size_t>(n)));
  }
  auto slash = cmdline.rfind('/');
  if (slash != std::string::npos) cmdline.erase(0, slash + 1);
  return cmdline.empty() ? "pqscope" : cmdline;
}

PQSCOPE_DECL std::string default_application_name() {
  std::string user;
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[4096];
  if (getpwuid_r(geteuid(), &pw, buf, sizeof buf, &found) == 0 && found != nullptr) user = found->pw_name;
  if (user.empty()) user = std::to_string(geteuid());
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::string h = host;
  h = h.substr(0, h.find('.'));
  return cut_utf8(program_name() + ":" + user + "@" + h, 63);
}

}  // namespace pqscope::detail
