#pragma once
// wire_counter: a TCP relay between one libpq client and the real server that
// counts the frontend messages it forwards. pqscope's own stats() count round
// trips where the library calls libpq; the relay checks that count from outside,
// on the wire: each round trip is exactly one Sync ('S') message.
//
//   pqtest::wire_counter relay{target};
//   pqscope::connection conn{relay.conninfo()};
//   ... relay.syncs() ...
//
// The relay serves one client connection. It parses only the frontend stream:
// the untyped startup packet (length-prefixed), then typed messages (1 byte type,
// int32 length that counts itself). TLS and GSS encryption are disabled in the
// conninfo it hands out, so the stream stays readable. A message is counted
// before its last byte is forwarded, so once the server has answered a Sync,
// the count already includes it.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include "servers.hpp"

namespace pqtest {

namespace wire_detail {

class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  [[nodiscard]] int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

[[noreturn]] inline void fail(const std::string& what) {
  throw std::runtime_error("wire_counter: " + what + ": " + std::strerror(errno));
}

inline std::uint32_t be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

// Splits the frontend byte stream into messages, however the bytes arrive.
class frontend_parser {
 public:
  // Startup-phase request codes after which another untyped packet follows.
  static constexpr std::uint32_t ssl_request = 80877103, gssenc_request = 80877104;

  // on_message(type): type is 0 for an untyped startup-phase packet.
  template <class F>
  void feed(const unsigned char* p, std::size_t n, F&& on_message) {
    while (n > 0 && !malformed_) {
      if (in_body_) {
        const std::size_t k = std::min(n, body_left_);
        p += k;
        n -= k;
        body_left_ -= k;
        if (body_left_ == 0) complete(on_message);
        continue;
      }
      const std::size_t need = startup_ ? 8 : 5;
      const std::size_t k = std::min(n, need - have_);
      std::memcpy(header_.data() + have_, p, k);
      have_ += k;
      p += k;
      n -= k;
      if (have_ < need) break;
      have_ = 0;
      if (startup_) {
        const std::uint32_t len = be32(header_.data());
        code_ = be32(header_.data() + 4);
        if (len < 8 || len > 10000) {  // the server's own limit for a startup packet
          malformed_ = true;
          break;
        }
        body_left_ = len - 8;
      } else {
        const std::uint32_t len = be32(header_.data() + 1);
        if (len < 4) {
          malformed_ = true;
          break;
        }
        body_left_ = len - 4;
      }
      in_body_ = true;
      if (body_left_ == 0) complete(on_message);
    }
  }

  [[nodiscard]] bool malformed() const noexcept { return malformed_; }

 private:
  template <class F>
  void complete(F& on_message) {
    in_body_ = false;
    if (startup_) {
      if (code_ != ssl_request && code_ != gssenc_request) startup_ = false;
      on_message(static_cast<unsigned char>(0));
    } else {
      on_message(header_[0]);
    }
  }

  bool startup_ = true;
  bool in_body_ = false;
  bool malformed_ = false;
  std::array<unsigned char, 8> header_{};
  std::size_t have_ = 0;
  std::size_t body_left_ = 0;
  std::uint32_t code_ = 0;
};

// A conninfo value in single quotes, as libpq reads it.
inline std::string quoted(const char* v) {
  std::string out = "'";
  for (const char* c = v; *c != '\0'; ++c) {
    if (*c == '\'' || *c == '\\') out += '\\';
    out += *c;
  }
  return out + "'";
}

}  // namespace wire_detail

class wire_counter {
 public:
  explicit wire_counter(const target& t) {
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(t.conninfo.c_str(), &err);
    if (opts == nullptr) {
      std::string msg = err != nullptr ? err : "out of memory";
      PQfreemem(err);
      throw std::runtime_error("wire_counter: cannot parse the conninfo of " + t.name + ": " + msg);
    }
    std::string host, hostaddr, port = "5432", rest;
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
      if (o->val == nullptr) continue;
      const std::string key = o->keyword;
      if (key == "host") host = o->val;
      else if (key == "hostaddr") hostaddr = o->val;
      else if (key == "port") port = o->val;
      else if (key != "sslmode" && key != "gssencmode" && key != "sslnegotiation")
        rest += key + "=" + wire_detail::quoted(o->val) + " ";
    }
    PQconninfoFree(opts);
    upstream_host_ = hostaddr.empty() ? host : hostaddr;
    upstream_port_ = port;
    if (upstream_host_.empty() || upstream_host_[0] == '/' || upstream_host_.find(',') != std::string::npos ||
        port.find(',') != std::string::npos)
      throw std::runtime_error("wire_counter: " + t.name + " must name one TCP host and port");

    listener_ = wire_detail::unique_fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener_) wire_detail::fail("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;  // ephemeral
    if (::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
      wire_detail::fail("bind");
    if (::listen(listener_.get(), 1) != 0) wire_detail::fail("listen");
    socklen_t len = sizeof addr;
    if (::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      wire_detail::fail("getsockname");

    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) wire_detail::fail("pipe2");
    wake_read_ = wire_detail::unique_fd(pipe_fds[0]);
    wake_write_ = wire_detail::unique_fd(pipe_fds[1]);

    // sslmode/gssencmode come last: the relay must see plain protocol bytes.
    conninfo_ = rest + "host=127.0.0.1 port=" + std::to_string(ntohs(addr.sin_port)) +
                " sslmode=disable gssencmode=disable";
    for (auto& c : counts_) c.store(0);
    thread_ = std::thread([this] { run(); });
  }

  wire_counter(const wire_counter&) = delete;
  wire_counter& operator=(const wire_counter&) = delete;

  // Stops relaying (an open client connection is cut) and joins the thread.
  ~wire_counter() {
    const char byte = 0;
    ssize_t w;
    do {
      w = ::write(wake_write_.get(), &byte, 1);
    } while (w < 0 && errno == EINTR);
    // A full pipe (EAGAIN) already holds a wake-up byte.
    thread_.join();
  }

  // The target's conninfo, pointed at the relay.
  [[nodiscard]] const std::string& conninfo() const noexcept { return conninfo_; }

  // From now on the client's bytes `from` reach the server as `to` (the same
  // length, so message lengths stay right): a statement whose text the library
  // checked arrives as another (the safety net's tests). Matches within one read.
  void rewrite(const std::string& from, std::string to) {
    if (from.empty() || to.size() > from.size()) throw std::invalid_argument("wire_counter::rewrite: bad lengths");
    to.resize(from.size(), ' ');
    std::lock_guard<std::mutex> lock(mutex_);
    rewrites_.emplace_back(from, std::move(to));
  }

  [[nodiscard]] std::uint64_t messages(unsigned char type) const noexcept { return counts_[type].load(); }
  [[nodiscard]] std::uint64_t syncs() const noexcept { return messages('S'); }
  [[nodiscard]] std::uint64_t parses() const noexcept { return messages('P'); }
  [[nodiscard]] std::uint64_t binds() const noexcept { return messages('B'); }
  [[nodiscard]] std::uint64_t executes() const noexcept { return messages('E'); }
  [[nodiscard]] std::uint64_t simple_queries() const noexcept { return messages('Q'); }
  [[nodiscard]] std::uint64_t terminates() const noexcept { return messages('X'); }
  [[nodiscard]] std::uint64_t startup_packets() const noexcept { return messages(0); }
  // The stream did not parse: every count after the bad bytes is meaningless.
  [[nodiscard]] bool malformed() const noexcept { return malformed_.load(); }
  // Why the relay stopped early (could not reach the server, send failed), if it did.
  [[nodiscard]] std::string error() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }

  // Waits until the client has closed its side and the relay has forwarded
  // everything; false on timeout.
  bool wait_closed(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return done_cv_.wait_for(lock, timeout, [this] { return done_; });
  }

 private:
  using unique_fd = wire_detail::unique_fd;

  // A direction's bytes not yet written.
  struct buffer {
    std::string data;
    std::size_t sent = 0;
    [[nodiscard]] bool empty() const noexcept { return sent == data.size(); }
  };

  void run() noexcept {
    try {
      relay();
    } catch (const std::exception& e) {
      set_error(e.what());
    } catch (...) {
      set_error("unknown error");
    }
    listener_.reset();
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    done_cv_.notify_all();
  }

  void set_error(const std::string& what) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_.empty()) error_ = what;
  }

  static int poll_retry(pollfd* fds, nfds_t n) {
    int r;
    do {
      r = ::poll(fds, n, -1);
    } while (r < 0 && errno == EINTR);
    if (r < 0) wire_detail::fail("poll");
    return r;
  }

  unique_fd accept_client() {
    for (;;) {
      pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {wake_read_.get(), POLLIN, 0}};
      poll_retry(fds, 2);
      if (fds[1].revents != 0) return unique_fd{};
      if (fds[0].revents == 0) continue;
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) return unique_fd{fd};
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
        wire_detail::fail("accept");
    }
  }

  unique_fd connect_upstream() {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (int rc = ::getaddrinfo(upstream_host_.c_str(), upstream_port_.c_str(), &hints, &found); rc != 0)
      throw std::runtime_error("cannot resolve " + upstream_host_ + ": " + ::gai_strerror(rc));
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(found, ::freeaddrinfo);
    for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
      unique_fd fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
      if (!fd) continue;
      if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) continue;
        pollfd fds[2] = {{fd.get(), POLLOUT, 0}, {wake_read_.get(), POLLIN, 0}};
        poll_retry(fds, 2);
        if (fds[1].revents != 0) return unique_fd{};
        int so_error = 0;
        socklen_t len = sizeof so_error;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 || so_error != 0) continue;
      }
      return fd;
    }
    throw std::runtime_error("cannot connect to " + upstream_host_ + ":" + upstream_port_);
  }

  void count(unsigned char type) { counts_[type].fetch_add(1); }

  // Reads what is available from `from` into `to`; false at end of stream.
  bool pull(int from, buffer& to, bool from_client) {
    unsigned char chunk[16384];
    for (;;) {
      const ssize_t n = ::recv(from, chunk, sizeof chunk, 0);
      if (n > 0) {
        if (from_client) {
          parser_.feed(chunk, static_cast<std::size_t>(n), [this](unsigned char type) { count(type); });
          if (parser_.malformed()) malformed_.store(true);
        }
        const std::size_t at = to.data.size();
        to.data.append(reinterpret_cast<const char*>(chunk), static_cast<std::size_t>(n));
        if (from_client) {
          std::lock_guard<std::mutex> lock(mutex_);
          for (const auto& [f, t] : rewrites_)
            for (std::size_t p = to.data.find(f, at); p != std::string::npos; p = to.data.find(f, p + f.size()))
              to.data.replace(p, f.size(), t);
        }
        return true;
      }
      if (n == 0) return false;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      return false;  // reset: treated as the end of that side
    }
  }

  // Writes what it can of `from` to `to`; false if the peer is gone.
  static bool push(int to, buffer& from) {
    while (!from.empty()) {
      const ssize_t n = ::send(to, from.data.data() + from.sent, from.data.size() - from.sent, MSG_NOSIGNAL);
      if (n > 0) {
        from.sent += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      return false;
    }
    from.data.clear();
    from.sent = 0;
    return true;
  }

  void relay() {
    unique_fd client = accept_client();
    if (!client) return;
    listener_.reset();  // one client only
    unique_fd server = connect_upstream();
    if (!server) return;

    buffer to_server, to_client;
    bool client_eof = false, server_eof = false;
    // shut: the other side's end of stream has been passed on (or cannot be).
    bool server_shut = false, client_shut = false;
    constexpr std::size_t high_water = 1 << 20;  // stop reading a side whose peer lags this far behind

    for (;;) {
      // A side that ended has its end passed on once its bytes are all out.
      if (client_eof && to_server.empty() && !server_shut) {
        ::shutdown(server.get(), SHUT_WR);
        server_shut = true;
      }
      if (server_eof && to_client.empty() && !client_shut) {
        ::shutdown(client.get(), SHUT_WR);
        client_shut = true;
      }
      if (server_shut && client_shut) return;

      pollfd fds[3] = {{client.get(), 0, 0}, {server.get(), 0, 0}, {wake_read_.get(), POLLIN, 0}};
      if (!client_eof && to_server.data.size() < high_water) fds[0].events |= POLLIN;
      if (!to_client.empty()) fds[0].events |= POLLOUT;
      if (!server_eof && to_client.data.size() < high_water) fds[1].events |= POLLIN;
      if (!to_server.empty()) fds[1].events |= POLLOUT;
      // A side that hung up and was read to the end has nothing more to give or take.
      if (client_eof && client_shut) fds[0].fd = -1;
      if (server_eof && server_shut) fds[1].fd = -1;
      poll_retry(fds, 3);
      if (fds[2].revents != 0) return;

      const short readable = POLLIN | POLLHUP | POLLERR;
      if (!client_eof && (fds[0].events & POLLIN) != 0 && (fds[0].revents & readable) != 0)
        client_eof = !pull(client.get(), to_server, true);
      if (!server_eof && (fds[1].events & POLLIN) != 0 && (fds[1].revents & readable) != 0)
        server_eof = !pull(server.get(), to_client, false);
      // A peer that hung up completely cannot take the bytes still meant for it.
      if (client_eof && (fds[0].revents & (POLLHUP | POLLERR)) != 0) {
        to_client = buffer{};
        client_shut = true;
      }
      if (server_eof && (fds[1].revents & (POLLHUP | POLLERR)) != 0) {
        to_server = buffer{};
        server_shut = true;
      }
      if (!push(server.get(), to_server) || !push(client.get(), to_client)) {
        set_error("a peer went away with bytes still to forward");
        return;
      }
    }
  }

  std::string conninfo_;
  std::string upstream_host_, upstream_port_;
  unique_fd listener_, wake_read_, wake_write_;
  wire_detail::frontend_parser parser_;  // relay thread only
  std::array<std::atomic<std::uint64_t>, 256> counts_;
  std::atomic<bool> malformed_{false};
  mutable std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::string error_;
  std::vector<std::pair<std::string, std::string>> rewrites_;  // under mutex_
  std::thread thread_;  // last: starts after every member above exists
};

}  // namespace pqtest
