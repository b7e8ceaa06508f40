// Pre-fork workers: one pqscope::database is created before fork() and shared by every
// process; each child connects on its own and runs its transactions. The parent's
// connection, opened before fork(), is refused in a child with usage_error (the child
// must not write to the parent's socket) and still works in the parent afterwards.
// Usage: prefork_workers APP_CONNINFO   (PgBouncer in transaction pooling, or PostgreSQL)
#include <pqscope/pqscope.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace {

constexpr int workers = 4;
constexpr long jobs_per_worker = 25;

// Runs in the child. Returns its exit status.
int run_worker(const pqscope::database& db, pqscope::connection& parents, int worker) {
  try {
    parents.execute("SELECT 1");
    std::cerr << "worker " << worker << ": the parent's connection was usable in the child\n";
    return 1;
  } catch (const pqscope::usage_error& e) {
    if (worker == 0) std::cout << "worker 0: parent's connection refused: " << e.what() << std::endl;
  }

  pqscope::connection conn = db.connect();  // the child's own session
  for (int n = 0; n < jobs_per_worker; ++n) {
    pqscope::atomic(conn, [&] {
      conn.execute("INSERT INTO prefork_workers_job(worker, n, pid) VALUES ($1, $2, pg_backend_pid())", worker, n);
      conn.execute("UPDATE prefork_workers_counter SET done = done + 1");
    });
  }
  std::cout << "worker " << worker << " (pid " << ::getpid() << "): " << jobs_per_worker << " transactions committed"
            << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: prefork_workers APP_CONNINFO\n";
    return 2;
  }
  pqscope::database db{argv[1]};  // settings only, no socket: safe to share across fork()
  pqscope::connection conn = db.connect();
  pqscope::atomic(conn, [&] {
    conn.set_local("client_min_messages", "warning");
    conn.execute("DROP TABLE IF EXISTS prefork_workers_job, prefork_workers_counter");
    conn.execute("CREATE TABLE prefork_workers_job(worker int, n int, pid int, PRIMARY KEY (worker, n))");
    conn.execute("CREATE TABLE prefork_workers_counter(done int NOT NULL)");
    conn.execute("INSERT INTO prefork_workers_counter VALUES (0)");
  });

  std::cout << "parent (pid " << ::getpid() << ") forks " << workers << " workers" << std::endl;  // flush before fork()
  std::vector<pid_t> children;
  for (int w = 0; w < workers; ++w) {
    pid_t pid = ::fork();
    if (pid < 0) {
      std::cerr << "prefork_workers: fork() failed\n";
      return 1;
    }
    if (pid == 0) {
      int status = 1;
      try {
        status = run_worker(db, conn, w);
      } catch (const pqscope::error& e) {
        std::cerr << "worker " << w << ": " << e.what() << std::endl;
      }
      std::_Exit(status);  // skip the parent's destructors and atexit handlers
    }
    children.push_back(pid);
  }

  int failed = 0;
  for (pid_t pid : children) {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }

  // The parent's connection was never touched by the children.
  long done = conn.query_value<long>("SELECT done FROM prefork_workers_counter");
  long jobs = conn.query_value<long>("SELECT count(*) FROM prefork_workers_job");
  long backends = conn.query_value<long>("SELECT count(DISTINCT pid) FROM prefork_workers_job");
  conn.execute("DROP TABLE prefork_workers_job, prefork_workers_counter");
  std::cout << "parent: " << jobs << " jobs by " << workers << " workers on " << backends
            << " server backend(s), counter " << done << "\n";
  if (failed != 0 || done != workers * jobs_per_worker || jobs != done) {
    std::cerr << "prefork_workers: " << failed << " worker(s) failed\n";
    return 1;
  }
  std::cout << "all " << workers << " workers done; the parent's connection still works\n";
} catch (const pqscope::error& e) {
  std::cerr << "prefork_workers: " << e.what() << "\n";
  return 1;
}
