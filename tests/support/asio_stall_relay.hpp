#pragma once
// asio_stall_relay: a TCP relay between libpq clients and a server, on a thread of its
// own, that can stop answering on command. For the fault tests of pqscope::asio:
//
//   pqtest::asio_stall_relay relay{target.conninfo};
//   connect to relay.conninfo() ...
//   relay.stall();            // from now on nothing is forwarded either way, and new
//                             // connections (PQcancel's) are accepted and left hanging
//   relay.cut_after_commit(); // the batch carrying COMMIT reaches the server, its answer
//                             // never reaches the client, whose socket is then closed
//   relay.refuse_new_connections(true);  // new connections are closed at once
//
// Every client connection gets its own server connection. The destructor closes
// everything, which ends any PQcancel still waiting on a stalled connection.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <libpq-fe.h>

namespace pqtest {

class asio_stall_relay {
 public:
  explicit asio_stall_relay(const std::string& upstream_conninfo) : upstream_(upstream_conninfo) {
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(upstream_conninfo.c_str(), &err);
    if (opts == nullptr) {
      PQfreemem(err);
      throw std::runtime_error("asio_stall_relay: cannot parse the conninfo");
    }
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
      if (o->val != nullptr && std::strcmp(o->keyword, "port") == 0) upstream_port_ = std::atoi(o->val);
    PQconninfoFree(opts);
    if (upstream_port_ == 0) upstream_port_ = 5432;

    listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (listen_ < 0 || ::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_, 16) != 0)
      throw std::runtime_error("asio_stall_relay: cannot listen");
    socklen_t len = sizeof a;
    ::getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error("asio_stall_relay: pipe");
    thread_ = std::thread([this] { run(); });
  }
  asio_stall_relay(const asio_stall_relay&) = delete;
  asio_stall_relay& operator=(const asio_stall_relay&) = delete;
  ~asio_stall_relay() {
    stop_ = true;
    wake();
    thread_.join();
    for (auto& p : pairs_) {
      if (p.client >= 0) ::close(p.client);
      if (p.server >= 0) ::close(p.server);
    }
    ::close(listen_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  // The upstream conninfo pointed at the relay (later keywords win in libpq).
  [[nodiscard]] std::string conninfo() const {
    return upstream_ + " host=127.0.0.1 hostaddr=127.0.0.1 port=" + std::to_string(port_) +
           " sslmode=disable gssencmode=disable";
  }
  // Once stall() returns, nothing more is forwarded: the relay forwards under the same
  // lock and checks the flag there, so bytes a client sends after stall() stay put even
  // when the relay's poll already counted the socket as one to forward.
  void stall() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stalled_ = true;
    }
    wake();
  }
  void resume() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stalled_ = false;
    }
    wake();
  }
  void cut_after_commit() {
    cut_after_commit_ = true;
    wake();
  }
  // Connections accepted from now on are held and never answered (a cancel request
  // that cannot reach the server); those already open keep working.
  void hold_new_connections() {
    hold_new_ = true;
    wake();
  }
  // While on, connections accepted are closed at once (no server to reach).
  void refuse_new_connections(bool on) {
    refuse_new_ = on;
    wake();
  }
  [[nodiscard]] int connections() const { return accepted_.load(); }

 private:
  struct pair {
    int client = -1, server = -1;
    bool cutting = false;  // COMMIT went through: drop the answers, close soon
    std::chrono::steady_clock::time_point cut_at{};
  };

  void wake() { (void)!::write(wake_[1], "x", 1); }

  int connect_upstream() const {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(upstream_port_));
    if (s >= 0 && ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return s;
    if (s >= 0) ::close(s);
    return -1;
  }

  static bool forward(int from, int to) {
    char buf[16384];
    const ssize_t n = ::recv(from, buf, sizeof buf, 0);
    if (n <= 0) return false;
    for (ssize_t sent = 0; sent < n;) {
      const ssize_t k = ::send(to, buf + sent, static_cast<std::size_t>(n - sent), MSG_NOSIGNAL);
      if (k <= 0) return false;
      sent += k;
    }
    return true;
  }

  // Client to server; true when the chunk carried a Parse of "COMMIT".
  static bool forward_watching_commit(int from, int to, bool& alive) {
    char buf[16384];
    const ssize_t n = ::recv(from, buf, sizeof buf, 0);
    alive = n > 0;
    if (n <= 0) return false;
    for (ssize_t sent = 0; sent < n;) {
      const ssize_t k = ::send(to, buf + sent, static_cast<std::size_t>(n - sent), MSG_NOSIGNAL);
      if (k <= 0) {
        alive = false;
        return false;
      }
      sent += k;
    }
    static const char needle[] = "\0COMMIT\0";
    return std::search(buf, buf + n, needle, needle + sizeof needle - 1) != buf + n;
  }

  static void close_pair(pair& p) {
    if (p.client >= 0) ::close(p.client);
    if (p.server >= 0) ::close(p.server);
    p.client = p.server = -1;
  }

  void run() {
    while (!stop_) {
      std::vector<pollfd> fds{{wake_[0], POLLIN, 0}, {listen_, POLLIN, 0}};
      const bool stalled = stalled_;
      const auto now = std::chrono::steady_clock::now();
      int timeout_ms = -1;
      for (auto& p : pairs_) {
        if (p.client < 0) continue;
        if (p.cutting) {
          if (now >= p.cut_at) {
            close_pair(p);
            continue;
          }
          timeout_ms = 20;
        }
        // A held connection (no server: accepted while stalled or holding) is never
        // read or answered, until the relay closes it.
        if (stalled || p.server < 0) continue;
        fds.push_back({p.client, POLLIN, 0});
        if (p.server >= 0) fds.push_back({p.server, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), timeout_ms) < 0) continue;
      if (fds[0].revents != 0) {
        char drain[64];
        while (::read(wake_[0], drain, sizeof drain) > 0) {
        }
      }
      if (fds[1].revents & POLLIN) {
        const int c = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0 && refuse_new_) {
          ++accepted_;
          ::close(c);
        } else if (c >= 0) {
          ++accepted_;
          pair p;
          p.client = c;
          // A stalled relay takes the connection and never answers it.
          const bool hold = stalled_ || hold_new_;
          if (!hold) p.server = connect_upstream();
          if (!hold && p.server < 0) {
            ::close(c);
          } else {
            pairs_.push_back(p);
          }
        }
      }
      std::lock_guard<std::mutex> lock(mutex_);
      for (std::size_t i = 2; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        if (stalled_) break;  // stalled after the poll: leave the bytes where they are
        for (auto& p : pairs_) {
          if (fds[i].fd == p.client && p.client >= 0) {
            if (p.server < 0) {
              close_pair(p);
              break;
            }
            bool alive = true;
            const bool commit = forward_watching_commit(p.client, p.server, alive);
            if (!alive) {
              close_pair(p);
            } else if (commit && cut_after_commit_) {
              cut_after_commit_ = false;
              p.cutting = true;
              p.cut_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
            }
            break;
          }
          if (fds[i].fd == p.server && p.server >= 0) {
            if (p.cutting) {
              char drop[16384];
              if (::recv(p.server, drop, sizeof drop, 0) <= 0) close_pair(p);
            } else if (!forward(p.server, p.client)) {
              close_pair(p);
            }
            break;
          }
        }
      }
    }
  }

  std::string upstream_;
  int upstream_port_ = 0;
  int listen_ = -1;
  int port_ = 0;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false}, stalled_{false}, cut_after_commit_{false}, hold_new_{false}, refuse_new_{false};
  std::atomic<int> accepted_{0};
  std::mutex mutex_;         // held while forwarding; stall() takes it to wait that out
  std::vector<pair> pairs_;  // the relay thread's own
  std::thread thread_;
};

}  // namespace pqtest
