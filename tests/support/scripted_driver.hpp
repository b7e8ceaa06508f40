#pragma once
// A driver with no server behind it: a small simulation of PostgreSQL's
// transaction state (idle, in transaction, failed transaction, a savepoint stack
// and SET LOCAL settings) that answers pipeline batches the way libpq_driver
// does. Every batch is recorded, and an error or a lost connection can be
// scripted at any statement, so the scope machine's control sequences can be
// checked exactly, without a server.
//
// Markers in user SQL:
//   FAIL, FAIL:23505   the statement errors (SQLSTATE 42000 unless given)
//   LOSE               the connection dies at the statement
//   STARTS_TX, ENDS_TX the statement opens / ends a transaction behind the
//                      client's back (as a procedure could)

#include <cctype>
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/driver.hpp>
#include <pqscope/result.hpp>
#include <pqscope/wal_position.hpp>

namespace pqtest {

class scripted_server {
 public:
  enum class tx_state { idle, in_transaction, failed };

  struct savepoint {
    std::string name;
    std::map<std::string, std::string> settings;  // as they were when it was set
  };

  // ---- the simulated session ----
  bool open = false;
  tx_state tx = tx_state::idle;
  std::string begin_sql;                        // the BEGIN of the current transaction
  std::vector<savepoint> savepoints;            // innermost last
  std::map<std::string, std::string> settings;  // SET LOCAL / set_config(..., true); end with the transaction
  int opens = 0, closes = 0, abandons = 0;
  int commits = 0, rollbacks = 0;  // transactions the server ended
  std::string conninfo, fallback_application_name;

  // ---- what was sent ----
  std::vector<std::vector<std::string>> batches;                    // SQL text, one entry per statement
  std::vector<std::vector<std::vector<std::string>>> batch_params;  // parameters; "NULL" for NULL
  std::size_t statements_received = 0;                              // every statement of every batch

  // ---- scripting ----
  // The statement with this 0-based index among all statements ever received fails / loses the connection.
  void fail_at_statement(std::size_t n, std::string sqlstate = "42000") {
    by_index_[n] = fault{false, std::move(sqlstate)};
  }
  void lose_at_statement(std::size_t n) { by_index_[n] = fault{true, {}}; }
  // Position k of the next batch fails / loses the connection.
  void fail_in_next_batch(std::size_t k, std::string sqlstate = "42000") {
    next_batch_ = std::make_pair(k, fault{false, std::move(sqlstate)});
  }
  void lose_in_next_batch(std::size_t k) { next_batch_ = std::make_pair(k, fault{true, {}}); }
  // The next `times` statements whose text contains `needle` fail, with `message`
  // when given (else one that quotes the statement).
  void fail_matching(std::string needle, std::string sqlstate, int times = 1, std::string message = {}) {
    matching_.push_back(match{std::move(needle), std::move(sqlstate), times, std::move(message)});
  }
  // The connection dies at a COMMIT, after the server received it.
  bool lose_on_commit = false;
  // What the WAL position query (connection_options::commit_positions) answers:
  // pg_current_wal_insert_lsn(), wal_block_size, wal_segment_size. Each COMMIT of a
  // transaction moves the insert position on by 0x100.
  std::string wal_insert = "0/1000000", wal_block_size = "8192", wal_segment_size = "16777216";
  int position_queries = 0;
  // What the read-your-writes check (transaction_options::at_least) finds, the way
  // PostgreSQL answers it: pg_last_wal_replay_lsn() (empty: a primary, where it is
  // NULL), and the session's default_transaction_isolation. A check that finds the
  // replay behind its parameter, or (its in-batch form, which reads
  // transaction_isolation) an isolation other than read committed, fails as the
  // server's pg_lsn input does: 22P02 and the text it could not read.
  std::string replayed, default_isolation = "read committed";
  int replica_checks = 0;

  // Batches sent since the previous call.
  std::vector<std::vector<std::string>> take_batches() {
    std::vector<std::vector<std::string>> out(batches.begin() + static_cast<std::ptrdiff_t>(taken_), batches.end());
    taken_ = batches.size();
    return out;
  }

  // One pipeline batch and its sync.
  pqscope::batch_reply exchange(const std::vector<pqscope::statement>& batch) {
    pqscope::batch_reply out;
    out.replies.resize(batch.size());
    record(batch);
    auto positional = std::exchange(next_batch_, std::nullopt);
    const std::size_t first_index = statements_received;
    statements_received += batch.size();
    if (!open) return lost(out, "the connection is closed");

    for (std::size_t i = 0; i < batch.size(); ++i) {
      const std::string sql = batch[i].sql != nullptr ? batch[i].sql : "";
      std::optional<fault> f = scripted_fault(first_index + i, sql);
      if (positional && positional->first == i) f = positional->second;
      if (!f && lose_on_commit && words(sql, 1) == "COMMIT") f = fault{true, {}};
      if (!f && is_user(sql)) f = marker(sql);
      if (f && f->lose) {
        drop_session();
        return lost(out, "server closed the connection unexpectedly");
      }
      pqscope::reply& r = out.replies[i];
      if (f)
        fail(r, words(sql, 1) == "COMMIT", f->sqlstate,
             f->message.empty() ? "scripted error " + f->sqlstate + " at: " + sql : f->message);
      else
        run(r, sql, params_of(batch[i]));
      r.parsed = batch[i].parse && !f;  // a Parse is accepted unless a fault is scripted there
      if (r.st == pqscope::reply::status::error) break;  // the pipeline is aborted: the rest stays `skipped`
    }
    out.state = tx == tx_state::idle             ? pqscope::server_state::idle
                : tx == tx_state::in_transaction ? pqscope::server_state::in_transaction
                                                 : pqscope::server_state::failed_transaction;
    return out;
  }

  void connect(const std::string& info, const std::string& fallback) {
    conninfo = info;
    fallback_application_name = fallback;
    open = true;
    ++opens;
    end_transaction();
  }
  void disconnect(bool abandoned) {
    if (open) ++(abandoned ? abandons : closes);
    drop_session();
  }

 private:
  struct fault {
    bool lose = false;
    std::string sqlstate;
    std::string message{};  // empty: "scripted error ... at: <the statement>"
  };
  struct match {
    std::string needle, sqlstate;
    int times;
    std::string message;
  };

  std::map<std::size_t, fault> by_index_;
  std::optional<std::pair<std::size_t, fault>> next_batch_;
  std::vector<match> matching_;
  std::size_t taken_ = 0;

  static std::vector<std::string> params_of(const pqscope::statement& s) {
    std::vector<std::string> p;
    for (int j = 0; j < s.n_params; ++j) p.emplace_back(s.values[j] != nullptr ? s.values[j] : "NULL");
    return p;
  }

  void record(const std::vector<pqscope::statement>& batch) {
    std::vector<std::string> sqls;
    std::vector<std::vector<std::string>> params;
    for (const auto& s : batch) {
      sqls.emplace_back(s.sql != nullptr ? s.sql : "");
      params.push_back(params_of(s));
    }
    batches.push_back(std::move(sqls));
    batch_params.push_back(std::move(params));
  }

  std::optional<fault> scripted_fault(std::size_t index, const std::string& sql) {
    if (auto it = by_index_.find(index); it != by_index_.end()) {
      fault f = it->second;
      by_index_.erase(it);
      return f;
    }
    for (match& m : matching_)
      if (m.times > 0 && sql.find(m.needle) != std::string::npos) {
        --m.times;
        return fault{false, m.sqlstate, m.message};
      }
    return std::nullopt;
  }

  static std::optional<fault> marker(const std::string& sql) {
    if (sql.find("LOSE") != std::string::npos) return fault{true, {}};
    auto at = sql.find("FAIL");
    if (at == std::string::npos) return std::nullopt;
    if (sql.compare(at + 4, 1, ":") == 0 && sql.size() >= at + 10) return fault{false, sql.substr(at + 5, 5)};
    return fault{false, "42000"};
  }

  // The first n words, upper-cased, separated by single spaces.
  static std::string words(const std::string& sql, int n) {
    std::string out;
    std::size_t i = 0;
    for (int w = 0; w < n; ++w) {
      while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) ++i;
      std::string word;
      while (i < sql.size() && !std::isspace(static_cast<unsigned char>(sql[i])))
        word += static_cast<char>(std::toupper(static_cast<unsigned char>(sql[i++])));
      if (word.empty()) break;
      out += (out.empty() ? "" : " ") + word;
    }
    return out;
  }
  // The word after the first `skip` words, as written.
  static std::string word_at(const std::string& sql, int skip) {
    std::size_t i = 0;
    std::string word;
    for (int w = 0; w <= skip; ++w) {
      while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) ++i;
      word.clear();
      while (i < sql.size() && !std::isspace(static_cast<unsigned char>(sql[i]))) word += sql[i++];
    }
    return word;
  }

  static bool is_control(const std::string& sql) {
    const std::string w = words(sql, 1);
    return w == "BEGIN" || w == "SAVEPOINT" || w == "RELEASE" || w == "ROLLBACK" || w == "COMMIT" ||
           words(sql, 2) == "SET LOCAL" || sql.rfind("SELECT pg_catalog.set_config(", 0) == 0;
  }
  static bool is_user(const std::string& sql) { return !is_control(sql); }

  static void ok(pqscope::reply& r, std::string tag) {
    r.st = pqscope::reply::status::ok;
    r.res = pqscope::result{pqscope::detail::adopt(PQmakeEmptyPGresult(nullptr, PGRES_COMMAND_OK))};
    r.command = std::move(tag);
  }
  // A result of one row and one column, for "SELECT <integer>".
  static void ok_value(pqscope::reply& r, const std::string& value) {
    PGresult* res = PQmakeEmptyPGresult(nullptr, PGRES_TUPLES_OK);
    PGresAttDesc col{};
    char name[] = "?column?";
    col.name = name;
    col.typid = 23;
    col.typlen = 4;
    col.atttypmod = -1;
    PQsetResultAttrs(res, 1, &col);
    std::string v = value;
    PQsetvalue(res, 0, 0, v.data(), static_cast<int>(v.size()));
    r.st = pqscope::reply::status::ok;
    r.res = pqscope::result{pqscope::detail::adopt(res)};
    r.command = "SELECT 1";
  }

  // One row of text columns.
  static void ok_row(pqscope::reply& r, const std::vector<std::string>& values) {
    PGresult* res = PQmakeEmptyPGresult(nullptr, PGRES_TUPLES_OK);
    std::vector<PGresAttDesc> cols(values.size());
    char name[] = "?column?";
    for (auto& col : cols) {
      col.name = name;
      col.typid = 25;
      col.typlen = -1;
      col.atttypmod = -1;
    }
    PQsetResultAttrs(res, static_cast<int>(cols.size()), cols.data());
    for (std::size_t c = 0; c < values.size(); ++c) {
      std::string v = values[c];
      PQsetvalue(res, 0, static_cast<int>(c), v.data(), static_cast<int>(v.size()));
    }
    r.st = pqscope::reply::status::ok;
    r.res = pqscope::result{pqscope::detail::adopt(res)};
    r.command = "SELECT 1";
  }

  // An error: an open transaction is failed by it; COMMIT that fails ends the transaction.
  void fail(pqscope::reply& r, bool ends_transaction, std::string sqlstate, std::string message) {
    r.st = pqscope::reply::status::error;
    auto e = std::make_shared<pqscope::reply_error>();
    e->sqlstate = std::move(sqlstate);
    e->message = std::move(message);
    r.error = std::move(e);
    if (ends_transaction) {
      if (tx != tx_state::idle) ++rollbacks;
      end_transaction();
    } else if (tx == tx_state::in_transaction) {
      tx = tx_state::failed;
    }
  }
  void aborted(pqscope::reply& r) {
    fail(r, false, "25P02", "current transaction is aborted, commands ignored until end of transaction block");
  }

  std::vector<savepoint>::iterator find_savepoint(const std::string& name) {
    for (auto it = savepoints.end(); it != savepoints.begin();) {
      --it;
      if (it->name == name) return it;
    }
    return savepoints.end();
  }

  void run(pqscope::reply& r, const std::string& sql, const std::vector<std::string>& params) {
    const std::string w1 = words(sql, 1), w2 = words(sql, 2), w3 = words(sql, 3);
    const bool failed = tx == tx_state::failed;
    if (w1 == "BEGIN") {
      if (failed) return aborted(r);
      if (tx == tx_state::idle) {  // inside a transaction BEGIN only warns
        tx = tx_state::in_transaction;
        begin_sql = sql;
      }
      return ok(r, "BEGIN");
    }
    if (w1 == "SAVEPOINT") {
      if (failed) return aborted(r);
      if (tx == tx_state::idle) return fail(r, false, "25P01", "SAVEPOINT can only be used in transaction blocks");
      savepoints.push_back(savepoint{word_at(sql, 1), settings});
      return ok(r, "SAVEPOINT");
    }
    if (w1 == "RELEASE") {
      if (failed) return aborted(r);
      if (tx == tx_state::idle) return fail(r, false, "25P01", "RELEASE SAVEPOINT can only be used in transaction blocks");
      auto it = find_savepoint(word_at(sql, w2 == "RELEASE SAVEPOINT" ? 2 : 1));
      if (it == savepoints.end()) return fail(r, false, "3B001", "savepoint does not exist");
      savepoints.erase(it, savepoints.end());
      return ok(r, "RELEASE");
    }
    if (w2 == "ROLLBACK TO") {
      if (tx == tx_state::idle) return fail(r, false, "25P01", "ROLLBACK TO SAVEPOINT can only be used in transaction blocks");
      auto it = find_savepoint(word_at(sql, w3 == "ROLLBACK TO SAVEPOINT" ? 3 : 2));
      if (it == savepoints.end()) return fail(r, false, "3B001", "savepoint does not exist");
      settings = it->settings;
      savepoints.erase(it + 1, savepoints.end());
      tx = tx_state::in_transaction;
      return ok(r, "ROLLBACK");
    }
    if (w1 == "ROLLBACK") {
      if (tx != tx_state::idle) ++rollbacks;
      end_transaction();
      return ok(r, "ROLLBACK");
    }
    if (w1 == "COMMIT") {
      if (tx == tx_state::in_transaction) {
        ++commits;
        try {
          wal_insert = pqscope::wal_position(pqscope::wal_position::parse(wal_insert).value() + 0x100).to_string();
        } catch (const pqscope::conversion_error&) {  // a test made it unreadable: it stays so
        }
      }
      if (failed) ++rollbacks;
      end_transaction();
      return ok(r, failed ? "ROLLBACK" : "COMMIT");  // a failed transaction can only roll back
    }
    if (failed) return aborted(r);
    if (w2 == "SET TRANSACTION") {  // the modes, right after BEGIN: recorded with it
      if (tx == tx_state::in_transaction) begin_sql += "; " + sql;
      return ok(r, "SET");
    }
    if (w2 == "SET LOCAL") {  // SET LOCAL name = value | SET LOCAL name TO value
      if (tx == tx_state::in_transaction) set(word_at(sql, 2), word_at(sql, 4));
      return ok(r, "SET");  // outside a transaction block it only warns
    }
    if (sql.rfind("SELECT pg_catalog.set_config(", 0) == 0) {
      if (params.size() != 2) return fail(r, false, "42P02", "set_config needs two parameters");
      if (tx == tx_state::in_transaction) set(params[0], params[1]);
      return ok(r, "SELECT 1");
    }
    // a user statement
    if (sql.find("STARTS_TX") != std::string::npos) tx = tx_state::in_transaction;
    if (sql.find("ENDS_TX") != std::string::npos) {
      ++commits;
      end_transaction();
    }
    if (sql.rfind("SELECT pg_catalog.pg_current_wal_insert_lsn()", 0) == 0) {
      ++position_queries;
      return ok_row(r, {wal_insert, wal_block_size, wal_segment_size});
    }
    if (sql.find("pg_catalog.pg_last_wal_replay_lsn()") != std::string::npos) return check(r, sql, params);
    if (w1 == "SELECT") {
      const std::string v = word_at(sql, 1);
      if (!v.empty() && v.find_first_not_of("0123456789") == std::string::npos) return ok_value(r, v);
      return ok(r, "SELECT 1");
    }
    if (w1 == "INSERT") return ok(r, "INSERT 0 1");
    if (w1 == "UPDATE" || w1 == "DELETE") return ok(r, w1 + " 1");
    return ok(r, w1);
  }

  void check(pqscope::reply& r, const std::string& sql, const std::vector<std::string>& params) {
    ++replica_checks;
    if (params.size() != 1) return fail(r, false, "42P02", "the check takes one parameter");
    auto refuse = [&](const std::string& text) {
      fail(r, false, "22P02", "invalid input syntax for type pg_lsn: \"" + text + "\"");
    };
    const auto required = pqscope::wal_position::parse(params[0]);
    if (!replayed.empty() && pqscope::wal_position::parse(replayed) < required)
      return refuse("pqscope: replica behind, replayed " + replayed);
    std::string isolation = default_isolation;  // in a transaction: its own
    for (const char* level : {"READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"})
      if (tx != tx_state::idle && begin_sql.find(std::string("ISOLATION LEVEL ") + level) != std::string::npos) {
        isolation = level;
        for (char& ch : isolation) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      }
    if (sql.find("current_setting('transaction_isolation')") != std::string::npos && isolation != "read committed")
      return refuse("pqscope: isolation " + isolation);
    ok(r, "SELECT 1");
  }

  void set(const std::string& name, const std::string& value) {
    if (value == "DEFAULT")
      settings.erase(name);
    else
      settings[name] = value;
  }

  void end_transaction() {
    tx = tx_state::idle;
    begin_sql.clear();
    savepoints.clear();
    settings.clear();
  }
  // The session is gone; the server rolls back whatever was open.
  void drop_session() {
    open = false;
    end_transaction();
  }

  static pqscope::batch_reply& lost(pqscope::batch_reply& out, std::string why) {
    out.lost = true;
    out.lost_message = std::move(why);
    out.state = pqscope::server_state::unknown;
    return out;
  }
};

inline std::ostream& operator<<(std::ostream& os, scripted_server::tx_state s) {
  switch (s) {
    case scripted_server::tx_state::idle: return os << "idle";
    case scripted_server::tx_state::in_transaction: return os << "in_transaction";
    case scripted_server::tx_state::failed: return os << "failed";
  }
  return os;
}

// The driver: the connection owns it, the test shares its server through driver().server().
class scripted_driver {
 public:
  scripted_driver() : server_(std::make_shared<scripted_server>()) {}

  void open(const std::string& conninfo, const std::string& fallback_application_name) {
    server_->connect(conninfo, fallback_application_name);
  }
  void close() noexcept { server_->disconnect(false); }
  void abandon() noexcept { server_->disconnect(true); }
  [[nodiscard]] bool is_open() const noexcept { return server_->open; }
  pqscope::batch_reply exchange(const std::vector<pqscope::statement>& batch) { return server_->exchange(batch); }
  [[nodiscard]] std::string application_name() const {
    return server_->fallback_application_name.empty() ? "scripted" : server_->fallback_application_name;
  }
  [[nodiscard]] PGconn* native_handle() const noexcept { return nullptr; }

  [[nodiscard]] scripted_server& server() const noexcept { return *server_; }
  [[nodiscard]] std::shared_ptr<scripted_server> shared_server() const noexcept { return server_; }

 private:
  std::shared_ptr<scripted_server> server_;
};

}  // namespace pqtest
