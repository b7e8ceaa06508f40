#pragma once
// stall_relay: a TCP relay between libpq clients and a real server (PostgreSQL or
// PgBouncer) that can stop forwarding in either direction on command, the way a
// network partition or a stalled load balancer does: the relay keeps both TCP
// connections open and keeps reading (the kernel acknowledges everything), but
// passes nothing on. Held bytes, and a side's end of stream, go out when the stall
// is lifted, as TCP would deliver them once a partition heals.
//
//   pqtest::stall_relay relay{target};
//   pqscope::connection conn{relay.conninfo()};
//   relay.stall(pqtest::stall_relay::to_server);   // requests stop reaching the server
//   relay.resume();
//
// Every accepted connection is relayed (cancel requests arrive on connections of
// their own). stall() applies to the connections open at the time; what happens to
// connections accepted later is set with new_connections(): relayed (the default),
// held (accepted, never forwarded: a black hole) or refused (closed at once).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "wire_counter.hpp"

namespace pqtest {

class stall_relay {
 public:
  enum direction { to_server = 1, to_client = 2, both = 3 };
  enum class accept_mode { relay, hold, refuse };

  explicit stall_relay(const target& t) {
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(t.conninfo.c_str(), &err);
    if (opts == nullptr) {
      std::string msg = err != nullptr ? err : "out of memory";
      PQfreemem(err);
      throw std::runtime_error("stall_relay: cannot parse the conninfo of " + t.name + ": " + msg);
    }
    std::string host, hostaddr, port = "5432", rest;
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
      if (o->val == nullptr) continue;
      const std::string key = o->keyword;
      if (key == "host") host = o->val;
      else if (key == "hostaddr") hostaddr = o->val;
      else if (key == "port") port = o->val;
      else if (key != "sslmode" && key != "gssencmode")
        rest += key + "=" + wire_detail::quoted(o->val) + " ";
    }
    PQconninfoFree(opts);
    upstream_host_ = hostaddr.empty() ? host : hostaddr;
    upstream_port_ = port;
    if (upstream_host_.empty() || upstream_host_[0] == '/' || upstream_host_.find(',') != std::string::npos)
      throw std::runtime_error("stall_relay: " + t.name + " must name one TCP host and port");

    listener_ = wire_detail::unique_fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener_) wire_detail::fail("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
      wire_detail::fail("bind");
    if (::listen(listener_.get(), 16) != 0) wire_detail::fail("listen");
    socklen_t len = sizeof addr;
    if (::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      wire_detail::fail("getsockname");
    port_ = ntohs(addr.sin_port);

    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) wire_detail::fail("pipe2");
    wake_read_ = wire_detail::unique_fd(pipe_fds[0]);
    wake_write_ = wire_detail::unique_fd(pipe_fds[1]);
    conninfo_ = rest + "host=127.0.0.1 port=" + std::to_string(port_) + " sslmode=disable gssencmode=disable";
    thread_ = std::thread([this] { run(); });
  }

  stall_relay(const stall_relay&) = delete;
  stall_relay& operator=(const stall_relay&) = delete;

  // Closes every relayed connection (both sides) and joins the thread.
  ~stall_relay() {
    stop_ = true;
    wake();
    thread_.join();
  }

  [[nodiscard]] const std::string& conninfo() const noexcept { return conninfo_; }
  [[nodiscard]] int port() const noexcept { return port_; }

  // Stops forwarding `d` on every connection open now.
  void stall(direction d) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& c : conns_) c->stalled |= d;
    }
    wake();
  }
  // Forwards what was held and carries on.
  void resume() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& c : conns_) c->stalled = 0;
    }
    wake();
  }
  void new_connections(accept_mode m) {
    std::lock_guard<std::mutex> lock(mutex_);
    accept_mode_ = m;
  }
  // Connections accepted so far (the session, then cancel requests, ...).
  [[nodiscard]] int accepted() const noexcept { return accepted_.load(); }
  [[nodiscard]] std::string error() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }

 private:
  using unique_fd = wire_detail::unique_fd;

  struct buffer {
    std::string data;
    std::size_t sent = 0;
    [[nodiscard]] bool empty() const noexcept { return sent == data.size(); }
  };
  struct conn {
    unique_fd client, server;  // server: none for a held (black-holed) connection
    buffer up, down;           // client -> server, server -> client
    bool client_eof = false, server_eof = false, server_shut = false, client_shut = false;
    int stalled = 0;  // direction bits; guarded by mutex_
    bool hold = false;
  };

  void wake() {
    const char byte = 0;
    ssize_t w;
    do {
      w = ::write(wake_write_.get(), &byte, 1);
    } while (w < 0 && errno == EINTR);
  }

  void set_error(const std::string& what) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_.empty()) error_ = what;
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
      // Blocking connect on loopback: immediate.
      unique_fd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
      if (!fd) continue;
      if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0) continue;
      ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
      return fd;
    }
    return unique_fd{};
  }

  static bool pull(int from, buffer& to) {
    char chunk[16384];
    for (;;) {
      const ssize_t n = ::recv(from, chunk, sizeof chunk, 0);
      if (n > 0) {
        to.data.append(chunk, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) return false;
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
  }

  static bool push(int to, buffer& from) {
    while (!from.empty()) {
      const ssize_t n = ::send(to, from.data.data() + from.sent, from.data.size() - from.sent, MSG_NOSIGNAL);
      if (n > 0) {
        from.sent += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    from.data.clear();
    from.sent = 0;
    return true;
  }

  void accept_one() {
    const int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    accepted_.fetch_add(1);
    auto c = std::make_unique<conn>();
    c->client = unique_fd(fd);
    accept_mode m;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      m = accept_mode_;
    }
    if (m == accept_mode::refuse) return;  // closed as c goes
    if (m == accept_mode::hold) {
      c->hold = true;
    } else {
      c->server = connect_upstream();
      if (!c->server) return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    conns_.push_back(std::move(c));
  }

  void run() noexcept {
    try {
      loop();
    } catch (const std::exception& e) {
      set_error(e.what());
    }
    std::lock_guard<std::mutex> lock(mutex_);
    conns_.clear();
  }

  void loop() {
    while (!stop_) {
      std::vector<pollfd> fds;
      std::vector<std::pair<conn*, bool>> who;  // (connection, is its client side)
      fds.push_back({wake_read_.get(), POLLIN, 0});
      fds.push_back({listener_.get(), POLLIN, 0});
      {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& cp : conns_) {
          conn& c = *cp;
          const bool up_ok = (c.stalled & to_server) == 0 && !c.hold;
          const bool down_ok = (c.stalled & to_client) == 0;
          if (up_ok && c.client_eof && c.up.empty() && !c.server_shut && c.server) {
            ::shutdown(c.server.get(), SHUT_WR);
            c.server_shut = true;
          }
          if (down_ok && c.server_eof && c.down.empty() && !c.client_shut) {
            ::shutdown(c.client.get(), SHUT_WR);
            c.client_shut = true;
          }
          pollfd cf{c.client.get(), 0, 0};
          if (!c.client_eof) cf.events |= POLLIN;
          if (down_ok && !c.down.empty()) cf.events |= POLLOUT;
          if (cf.events == 0) cf.fd = -1;  // a hung-up socket would report POLLHUP forever
          fds.push_back(cf);
          who.emplace_back(&c, true);
          if (c.server) {
            pollfd sf{c.server.get(), 0, 0};
            if (!c.server_eof) sf.events |= POLLIN;
            if (up_ok && !c.up.empty()) sf.events |= POLLOUT;
            if (sf.events == 0) sf.fd = -1;
            fds.push_back(sf);
            who.emplace_back(&c, false);
          }
        }
      }
      int r;
      do {
        r = ::poll(fds.data(), fds.size(), -1);
      } while (r < 0 && errno == EINTR);
      if (r < 0) wire_detail::fail("poll");
      if (fds[0].revents != 0) {
        char drain[64];
        while (::read(wake_read_.get(), drain, sizeof drain) > 0) {
        }
      }
      if (stop_) return;
      if (fds[1].revents != 0) accept_one();
      std::lock_guard<std::mutex> lock(mutex_);
      for (std::size_t k = 0; k < who.size(); ++k) {
        conn& c = *who[k].first;
        const short re = fds[k + 2].revents;
        if (re == 0) continue;
        const bool up_ok = (c.stalled & to_server) == 0 && !c.hold;
        const bool down_ok = (c.stalled & to_client) == 0;
        if (who[k].second) {
          if (!c.client_eof && (re & (POLLIN | POLLHUP | POLLERR)) != 0) c.client_eof = !pull(c.client.get(), c.up);
          if (down_ok && !push(c.client.get(), c.down)) {
            c.down = buffer{};
            c.client_shut = true;
          }
        } else {
          if (!c.server_eof && (re & (POLLIN | POLLHUP | POLLERR)) != 0) c.server_eof = !pull(c.server.get(), c.down);
          if (up_ok && !push(c.server.get(), c.up)) {
            c.up = buffer{};
            c.server_shut = true;
          }
        }
      }
      // Push whatever a lifted stall released, then drop connections that are done.
      for (auto& cp : conns_) {
        conn& c = *cp;
        if ((c.stalled & to_server) == 0 && !c.hold && c.server && !push(c.server.get(), c.up)) {
          c.up = buffer{};
          c.server_shut = true;
        }
        if ((c.stalled & to_client) == 0 && !push(c.client.get(), c.down)) {
          c.down = buffer{};
          c.client_shut = true;
        }
      }
      conns_.remove_if([](const std::unique_ptr<conn>& c) {
        if (c->hold) return c->client_eof;
        return c->client_eof && c->client_shut && c->server_eof && c->server_shut;
      });
    }
  }

  std::string conninfo_;
  std::string upstream_host_, upstream_port_;
  int port_ = 0;
  unique_fd listener_, wake_read_, wake_write_;
  mutable std::mutex mutex_;
  std::list<std::unique_ptr<conn>> conns_;
  accept_mode accept_mode_ = accept_mode::relay;
  std::atomic<int> accepted_{0};
  std::atomic<bool> stop_{false};
  std::string error_;
  std::thread thread_;  // last: starts after every member above exists
};

}  // namespace pqtest
