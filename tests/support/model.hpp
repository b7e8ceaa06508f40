#pragma once
// Model-based random programs of nested scopes, shared by tests/model.cpp (the
// blocking connection) and tests/asio_model.cpp (the asynchronous one): the
// program generator, the runner on the blocking library, and the model of the
// expected semantics (Django's atomic), written from the contract rather than
// from the code. See tests/model.cpp for what is checked.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <pqscope/pqscope.hpp>

namespace pqtest::programs {

// ---- programs -----------------------------------------------------------------

struct scope_node;

struct op {
  enum kind { insert, fail, nested, on_commit, on_rollback, read } k = insert;
  int id = 0;           // row id for insert, callback id for on_commit/on_rollback
  bool caught = false;  // wrapped in try { } catch (...) { } at its own level
  std::shared_ptr<scope_node> scope;  // nested
};

struct scope_node {
  enum end_kind { commit, rollback, drop, raise } end = commit;
  bool savepoint = true;
  bool atomic = false;  // pqscope::atomic(): ends by commit or by the exception
  // The scope's options, drawn from the seed (options.savepoint is ignored: the
  // field above says it). The outermost scope draws all of them; a nested scope
  // may repeat what the outermost one set, and sets timeouts of its own. None
  // changes what is committed, except read_only, which makes every write fail
  // with read_only_sql_transaction (the model knows).
  pqscope::transaction_options options;
  std::vector<op> body;
};

// The options a runner gives the scope s.
inline pqscope::transaction_options options_of(const scope_node& s, bool force_batch) {
  pqscope::transaction_options o = s.options;
  o.savepoint = s.savepoint;
  if (force_batch) o.batch = true;
  return o;
}

inline const char* name(pqscope::isolation i) {
  switch (i) {
    case pqscope::isolation::server_default: return "server_default";
    case pqscope::isolation::read_committed: return "read_committed";
    case pqscope::isolation::repeatable_read: return "repeatable_read";
    case pqscope::isolation::serializable: return "serializable";
  }
  return "?";
}

// The options that differ from the defaults, as C++ would set them ("" for none).
inline std::string describe(const pqscope::transaction_options& o) {
  const pqscope::transaction_options d;
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : ", ") + s; };
  if (o.isolation != d.isolation) add(std::string("isolation = ") + name(o.isolation));
  if (o.read_only) add("read_only");
  if (o.deferrable) add("deferrable");
  if (o.resolve_in_doubt) add("resolve_in_doubt");
  if (o.statement_timeout != d.statement_timeout)
    add("statement_timeout = " + std::to_string(o.statement_timeout.count()) + "ms");
  if (o.lock_timeout != d.lock_timeout) add("lock_timeout = " + std::to_string(o.lock_timeout.count()) + "ms");
  if (o.durable) add("durable");
  if (o.batch) add("batch");
  if (o.retries != d.retries) add("retries = " + std::to_string(o.retries));
  if (o.savepoint_limit != d.savepoint_limit) add("savepoint_limit = " + std::to_string(o.savepoint_limit));
  return out;
}

// Whether a program runs a statement that writes (an insert, or the failing duplicate insert).
inline bool writes(const scope_node& s) {
  for (const op& o : s.body)
    if (o.k == op::insert || o.k == op::fail || (o.k == op::nested && writes(*o.scope))) return true;
  return false;
}

struct user_exception {};

// What an exception is, as the program sees it.
inline std::string category(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const user_exception&) {
    return "user";
  } catch (const pqscope::transaction_aborted&) {
    return "transaction_aborted";
  } catch (const pqscope::unique_violation&) {
    return "unique_violation";
  } catch (const pqscope::read_only_sql_transaction&) {
    return "read_only_sql_transaction";
  } catch (const pqscope::usage_error& u) {
    return std::string("usage_error: ") + u.what();
  } catch (const std::exception& x) {
    return std::string("unexpected: ") + x.what();
  }
}

class generator {
 public:
  explicit generator(std::uint64_t seed) : rng_(seed) {}

  // The program, then its options: drawn after its shape, so that a seed gives the
  // same program as before options were drawn.
  std::shared_ptr<scope_node> program() {
    next_id_ = 1;
    auto p = scope(0);
    outermost_options(*p);
    for (op& o : p->body)
      if (o.k == op::nested) nested_options(*o.scope, p->options);
    return p;
  }

 private:
  bool chance(int percent) { return std::uniform_int_distribution<int>(0, 99)(rng_) < percent; }
  int between(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  // A timeout that never fires in practice (valgrind included): 5 to 60 s.
  std::chrono::milliseconds timeout() { return std::chrono::milliseconds(between(5, 60) * 1000); }

  void outermost_options(scope_node& s) {
    pqscope::transaction_options& o = s.options;
    static const pqscope::isolation levels[] = {pqscope::isolation::server_default, pqscope::isolation::read_committed,
                                                pqscope::isolation::repeatable_read, pqscope::isolation::serializable};
    o.isolation = levels[between(0, 3)];
    // Mostly where nothing is written; sometimes where something is, and every write fails.
    o.read_only = chance(writes(s) ? 10 : 50);
    o.deferrable = chance(o.read_only && o.isolation == pqscope::isolation::serializable ? 60 : 20);
    o.resolve_in_doubt = chance(40);
    if (chance(40)) o.statement_timeout = timeout();
    if (chance(30)) o.lock_timeout = timeout();
    o.durable = chance(30);
    if (chance(20)) o.savepoint_limit = static_cast<std::size_t>(between(16, 256));
    if (s.atomic) {  // a transaction object refuses both
      o.batch = chance(30);
      if (chance(50)) o.retries = between(1, 5);
    }
  }

  // A nested scope: sometimes repeats the outermost scope's modes (allowed), sets
  // timeouts of its own (restored when it ends), or asks an inner atomic() for
  // batching or retries (ignored: only the outermost one batches and retries).
  void nested_options(scope_node& s, const pqscope::transaction_options& root) {
    if (chance(25)) {
      pqscope::transaction_options& o = s.options;
      if (chance(50)) o.isolation = root.isolation;
      o.read_only = root.read_only && chance(50);
      o.deferrable = root.deferrable && chance(50);
      if (chance(40)) o.statement_timeout = timeout();
      if (chance(30)) o.lock_timeout = timeout();
      if (s.atomic) {
        o.batch = chance(30);
        if (chance(30)) o.retries = between(1, 5);
      }
    }
    for (op& o : s.body)
      if (o.k == op::nested) nested_options(*o.scope, root);
  }

  std::shared_ptr<scope_node> scope(int depth) {
    auto s = std::make_shared<scope_node>();
    s->atomic = chance(30);
    s->savepoint = depth == 0 || chance(75);
    const int r = std::uniform_int_distribution<int>(0, 99)(rng_);
    if (s->atomic)
      s->end = r < 75 ? scope_node::commit : scope_node::raise;
    else
      s->end = r < 55 ? scope_node::commit : r < 75 ? scope_node::rollback : r < 85 ? scope_node::drop
                                                                                  : scope_node::raise;
    const int n = std::uniform_int_distribution<int>(0, 4)(rng_);
    for (int i = 0; i < n; ++i) {
      op o;
      const int pick = std::uniform_int_distribution<int>(0, 99)(rng_);
      if (pick < 40) {
        o.k = op::insert;
      } else if (pick < 62 && depth < 5) {
        o.k = op::nested;
        o.scope = scope(depth + 1);
      } else if (pick < 72) {
        o.k = op::fail;
      } else if (pick < 78) {
        o.k = op::read;
      } else if (pick < 89) {
        o.k = op::on_commit;
      } else {
        o.k = op::on_rollback;
      }
      o.id = next_id_++;
      o.caught = chance(70);
      s->body.push_back(std::move(o));
    }
    return s;
  }

  std::mt19937_64 rng_;
  int next_id_ = 1;
};

inline void print(std::ostream& os, const scope_node& s, int indent) {
  const std::string pad(static_cast<std::size_t>(indent) * 2, ' ');
  const std::string opts = describe(s.options);
  os << (s.atomic ? "atomic" : "transaction") << (s.savepoint ? "" : "(savepoint=false)")
     << (opts.empty() ? "" : " [" + opts + "]") << " {\n";
  for (const op& o : s.body) {
    os << pad << "  " << (o.caught ? "try { " : "");
    switch (o.k) {
      case op::insert: os << "insert " << o.id; break;
      case op::fail: os << "duplicate insert (unique_violation)"; break;
      case op::on_commit: os << "on_commit #" << o.id; break;
      case op::on_rollback: os << "on_rollback #" << o.id; break;
      case op::read: os << "read the rows"; break;
      case op::nested: print(os, *o.scope, indent + 1); break;
    }
    os << (o.caught ? " } catch (...) {}" : "") << "\n";
  }
  static const char* ends[] = {"commit()", "rollback()", "(destroyed)", "throw"};
  os << pad << "  " << ends[s.end] << "\n" << pad << "}";
}

// What one run of a program produced.
struct observed {
  std::set<int> committed;
  std::vector<int> fired;           // on_commit ids, and on_rollback ids negated, in order
  std::vector<std::string> trace;   // every exception caught, and what escaped the outermost scope
  bool operator==(const observed& o) const {
    return committed == o.committed && fired == o.fired && trace == o.trace;
  }
};

inline std::ostream& operator<<(std::ostream& os, const observed& o) {
  os << "committed {";
  for (int id : o.committed) os << " " << id;
  os << " } fired [";
  for (int id : o.fired) os << " " << id;
  os << " ] exceptions [";
  for (const auto& t : o.trace) os << " " << t << ";";
  return os << " ]";
}

// ---- the library ----------------------------------------------------------------

class real_runner {
 public:
  real_runner(pqscope::connection& c, std::string table, int base, bool batch)
      : c_(c), table_(std::move(table)), base_(base), batch_(batch) {}

  // What the program did; the committed rows are read afterwards, by another
  // session (look()), once the session's state has been checked.
  observed run(const scope_node& program) {
    try {
      scope(program, true);
      out_.trace.push_back("escaped: none");
    } catch (...) {
      out_.trace.push_back("escaped: " + category(std::current_exception()));
    }
    return out_;
  }

 private:
  void body(const scope_node& s) {
    for (const op& o : s.body) {
      if (!o.caught) {
        step(o);
        continue;
      }
      try {
        step(o);
      } catch (...) {
        out_.trace.push_back(category(std::current_exception()));
      }
    }
  }

  void scope(const scope_node& s, bool root = false) {
    const pqscope::transaction_options opts = options_of(s, batch_ && root);
    if (s.atomic) {
      const std::size_t mark = out_.trace.size();
      pqscope::atomic(c_, opts, [&] {
        out_.trace.resize(mark);  // a replayed attempt starts afresh
        body(s);
        if (s.end == scope_node::raise) throw user_exception{};
      });
      return;
    }
    pqscope::transaction tx{c_, opts};
    body(s);
    switch (s.end) {
      case scope_node::commit: tx.commit(); break;
      case scope_node::rollback: tx.rollback(); break;
      case scope_node::drop: break;
      case scope_node::raise: throw user_exception{};
    }
  }

  void step(const op& o) {
    switch (o.k) {
      case op::insert: c_.execute("INSERT INTO " + table_ + " VALUES ($1)", base_ + o.id); break;
      case op::fail: c_.execute("INSERT INTO " + table_ + " VALUES (0)"); break;  // row 0 exists
      case op::on_commit: c_.on_commit([this, id = o.id] { out_.fired.push_back(id); }); break;
      case op::on_rollback: c_.on_rollback([this, id = o.id] { out_.fired.push_back(-id); }); break;
      case op::read:
        out_.trace.push_back("read: " + c_.query_value<std::optional<std::string>>(
                                            "SELECT string_agg((id - $1)::text, ',' ORDER BY id) FROM " + table_ +
                                                " WHERE id > $1",
                                            base_)
                                            .value_or(""));
        break;
      case op::nested: scope(*o.scope); break;
    }
  }

  pqscope::connection& c_;
  std::string table_;
  int base_;
  bool batch_;
  observed out_;
};

// ---- the model ----------------------------------------------------------------------

// The expected semantics, written from the contract rather than from the code:
// a failure dooms the innermost scope that has a savepoint (or the transaction);
// a doomed scope refuses statements, nested scopes and commit (which rolls it back);
// rolling back a savepoint drops its rows and callbacks; rolling back a scope without
// a savepoint dooms the enclosing one; the outermost commit makes rows durable and
// fires on_commit, the outermost rollback fires on_rollback (including those of
// scopes without a savepoint that rolled back inside it).
class model {
 public:
  observed run(const scope_node& program) {
    try {
      scope(program);
      out_.trace.push_back("escaped: none");
    } catch (...) {
      out_.trace.push_back("escaped: " + category(std::current_exception()));
    }
    return out_;
  }

 private:
  struct frame {
    bool owning;
    std::vector<int> rows, on_commit, on_rollback;
  };

  [[noreturn]] static void aborted() { throw pqscope::transaction_aborted("doomed", "", ""); }

  void body(const scope_node& s) {
    for (const op& o : s.body) {
      if (!o.caught) {
        step(o);
        continue;
      }
      try {
        step(o);
      } catch (...) {
        out_.trace.push_back(category(std::current_exception()));
      }
    }
  }

  void scope(const scope_node& s) {
    if (!frames_.empty() && doom_) aborted();
    if (frames_.empty()) read_only_ = s.options.read_only;
    frames_.push_back(frame{frames_.empty() || s.savepoint, {}, {}, {}});
    const std::size_t i = frames_.size() - 1;
    try {
      body(s);
    } catch (...) {
      rollback(i);
      throw;
    }
    switch (s.end) {
      case scope_node::commit: commit(i); break;
      case scope_node::rollback:
      case scope_node::drop: rollback(i); break;
      case scope_node::raise: rollback(i); throw user_exception{};
    }
  }

  void step(const op& o) {
    switch (o.k) {
      case op::insert:
        if (doom_) aborted();
        if (read_only_) fail(true);
        frames_.back().rows.push_back(o.id);
        break;
      case op::fail:
        if (doom_) aborted();
        fail(read_only_);
      case op::on_commit: frames_.back().on_commit.push_back(o.id); break;
      case op::on_rollback: frames_.back().on_rollback.push_back(o.id); break;
      case op::read: {
        if (doom_) aborted();
        std::set<int> visible;
        for (const frame& f : frames_) visible.insert(f.rows.begin(), f.rows.end());
        std::string text;
        for (int id : visible) text += (text.empty() ? "" : ",") + std::to_string(id);
        out_.trace.push_back("read: " + text);
        break;
      }
      case op::nested: scope(*o.scope); break;
    }
  }

  // A failed statement dooms the innermost scope that has a savepoint.
  [[noreturn]] void fail(bool read_only) {
    std::size_t level = frames_.size() - 1;
    while (level > 0 && !frames_[level].owning) --level;
    doom_ = level;
    if (read_only) throw pqscope::read_only_sql_transaction("read-only transaction", "25006", "", "");
    throw pqscope::unique_violation("duplicate", "23505", "", "");
  }

  void commit(std::size_t i) {
    if (doom_) {
      rollback(i);
      aborted();
    }
    frame f = std::move(frames_.back());
    frames_.pop_back();
    if (i == 0) {
      out_.committed.insert(f.rows.begin(), f.rows.end());
      out_.fired.insert(out_.fired.end(), f.on_commit.begin(), f.on_commit.end());
      return;
    }
    frame& parent = frames_.back();
    parent.rows.insert(parent.rows.end(), f.rows.begin(), f.rows.end());
    parent.on_commit.insert(parent.on_commit.end(), f.on_commit.begin(), f.on_commit.end());
    parent.on_rollback.insert(parent.on_rollback.end(), f.on_rollback.begin(), f.on_rollback.end());
  }

  void rollback(std::size_t i) {
    frame f = std::move(frames_.back());
    frames_.pop_back();
    if (i == 0) {
      doom_.reset();
      for (int id : f.on_rollback) out_.fired.push_back(-id);
      return;
    }
    if (f.owning) {
      if (doom_ && *doom_ >= i) doom_.reset();
      return;
    }
    // No savepoint: the rows stay in the transaction, which can now only roll back,
    // and the on_rollback callbacks wait for that rollback.
    frame& parent = frames_.back();
    parent.rows.insert(parent.rows.end(), f.rows.begin(), f.rows.end());
    parent.on_rollback.insert(parent.on_rollback.end(), f.on_rollback.begin(), f.on_rollback.end());
    if (!doom_) {
      std::size_t level = i - 1;
      while (level > 0 && !frames_[level].owning) --level;
      doom_ = level;
    }
  }

  std::vector<frame> frames_;
  std::optional<std::size_t> doom_;
  bool read_only_ = false;  // the outermost scope's: every write fails
  observed out_;
};

// ---- helpers ---------------------------------------------------------------------

struct counts {
  long programs = 0, scopes = 0, statements = 0, exceptions = 0;
  // Outermost scopes by option: that the draws really cover each one.
  long by_isolation[4] = {0, 0, 0, 0};
  long read_only = 0, read_only_writing = 0, deferrable = 0, resolve_in_doubt = 0, timeouts = 0, durable = 0,
       batch = 0, retries = 0, nested_with_options = 0;
};

inline void count_options(const scope_node& root, counts& n) {
  const pqscope::transaction_options& o = root.options;
  ++n.by_isolation[static_cast<int>(o.isolation)];
  n.read_only += o.read_only;
  n.read_only_writing += o.read_only && writes(root);
  n.deferrable += o.deferrable;
  n.resolve_in_doubt += o.resolve_in_doubt;
  n.timeouts += o.statement_timeout.count() != 0 || o.lock_timeout.count() != 0;
  n.durable += o.durable;
  n.batch += o.batch;
  n.retries += o.retries != 0;
}

// One line: how many outermost scopes drew each option.
inline std::string option_summary(const counts& n) {
  std::ostringstream os;
  os << "outermost options: isolation " << n.by_isolation[0] << "/" << n.by_isolation[1] << "/" << n.by_isolation[2]
     << "/" << n.by_isolation[3] << " (default/rc/rr/serializable), read_only " << n.read_only << " ("
     << n.read_only_writing << " writing), deferrable " << n.deferrable << ", resolve_in_doubt " << n.resolve_in_doubt
     << ", timeouts " << n.timeouts << ", durable " << n.durable << ", batch " << n.batch << ", retries "
     << n.retries << "; nested scopes with options " << n.nested_with_options;
  return os.str();
}

inline void count(const scope_node& s, counts& n, bool root = true) {
  if (root) count_options(s, n);
  if (!root && !describe(s.options).empty()) ++n.nested_with_options;
  ++n.scopes;
  for (const op& o : s.body) {
    if (o.k == op::insert || o.k == op::fail || o.k == op::read) ++n.statements;
    if (o.k == op::nested) count(*o.scope, n, false);
  }
}

// Shrinking: a copy of a program, and every program one step smaller.
inline std::shared_ptr<scope_node> copy(const scope_node& s) {
  auto c = std::make_shared<scope_node>(s);
  for (op& o : c->body)
    if (o.scope) o.scope = copy(*o.scope);
  return c;
}

// s with one of its options back to the default. The modes a nested scope may
// only repeat (isolation, read_only, deferrable) go back in the nested scopes too.
template <class Reset>
std::shared_ptr<scope_node> without(const scope_node& s, Reset reset, bool in_nested) {
  auto c = copy(s);
  reset(c->options);
  if (in_nested)
    for (op& o : c->body)
      if (o.k == op::nested) o.scope = without(*o.scope, reset, true);
  return c;
}

// Every program one step smaller than s.
inline std::vector<std::shared_ptr<scope_node>> smaller(const scope_node& s) {
  std::vector<std::shared_ptr<scope_node>> out;
  const pqscope::transaction_options d;
  const pqscope::transaction_options& o = s.options;
  using opts = pqscope::transaction_options;
  if (o.isolation != d.isolation) out.push_back(without(s, [&](opts& x) { x.isolation = d.isolation; }, true));
  if (o.read_only) out.push_back(without(s, [](opts& x) { x.read_only = false; }, true));
  if (o.deferrable) out.push_back(without(s, [](opts& x) { x.deferrable = false; }, true));
  if (o.resolve_in_doubt) out.push_back(without(s, [](opts& x) { x.resolve_in_doubt = false; }, false));
  if (o.statement_timeout != d.statement_timeout)
    out.push_back(without(s, [&](opts& x) { x.statement_timeout = d.statement_timeout; }, false));
  if (o.lock_timeout != d.lock_timeout)
    out.push_back(without(s, [&](opts& x) { x.lock_timeout = d.lock_timeout; }, false));
  if (o.durable) out.push_back(without(s, [](opts& x) { x.durable = false; }, false));
  if (o.batch) out.push_back(without(s, [](opts& x) { x.batch = false; }, false));
  if (o.retries != d.retries) out.push_back(without(s, [&](opts& x) { x.retries = d.retries; }, false));
  if (o.savepoint_limit != d.savepoint_limit)
    out.push_back(without(s, [&](opts& x) { x.savepoint_limit = d.savepoint_limit; }, false));
  for (std::size_t i = 0; i < s.body.size(); ++i) {
    auto c = copy(s);
    c->body.erase(c->body.begin() + static_cast<std::ptrdiff_t>(i));
    out.push_back(c);
    if (s.body[i].k == op::nested)
      for (auto& inner : smaller(*s.body[i].scope)) {
        auto d = copy(s);
        d->body[i].scope = inner;
        out.push_back(d);
      }
    if (s.body[i].caught) {
      auto d = copy(s);
      d->body[i].caught = false;
      out.push_back(d);
    }
  }
  return out;
}


// A batched program: only an outermost atomic() batches, and it ends by commit or exception.
inline std::shared_ptr<scope_node> for_batch(std::shared_ptr<scope_node> p) {
  p->atomic = true;
  if (p->end == scope_node::rollback || p->end == scope_node::drop) p->end = scope_node::raise;
  return p;
}

// What another session sees after a program, in one round trip: the sessions of
// these application names that sit inside a transaction (pg_stat_activity's state
// 'idle in transaction%'), and the rows each table has committed above base.
struct seen_from_outside {
  std::string in_transaction;          // "app is state, ..."; "" when none
  std::vector<std::set<int>> committed;  // per table
};

inline seen_from_outside look(pqscope::connection& observer, const std::string& app_a, const std::string& app_b,
                              const std::vector<std::string>& tables = {}, int base = 0) {
  // pg_stat_get_activity(): the function under pg_stat_activity, without its joins (a third of the cost).
  std::string sql =
      "SELECT (SELECT string_agg(s.application_name || ' is ' || s.state, ', ') FROM pg_stat_get_activity(NULL) s "
      "WHERE s.application_name IN ($1, $2) AND s.state LIKE 'idle in transaction%')";
  for (const std::string& t : tables) sql += ", (SELECT string_agg((id - $3)::text, ',') FROM " + t + " WHERE id > $3)";
  const pqscope::result r = tables.empty() ? observer.execute(sql, app_a, app_b) : observer.execute(sql, app_a, app_b, base);
  seen_from_outside out;
  out.in_transaction = r[0][0].as<std::optional<std::string>>().value_or("");
  for (std::size_t i = 0; i < tables.size(); ++i) {
    std::set<int> ids;
    const std::string text = r[0][i + 1].as<std::optional<std::string>>().value_or("");
    for (std::size_t at = 0; at < text.size();) {
      std::size_t comma = text.find(',', at);
      if (comma == std::string::npos) comma = text.size();
      ids.insert(std::stoi(text.substr(at, comma - at)));
      at = comma + 1;
    }
    out.committed.push_back(std::move(ids));
  }
  return out;
}

// look() after a program, when its session is idle: a session it left inside a
// transaction stays there (no one else can end it), so one seen is looked at again
// for half a second before it counts. Through a pooler, another test's client may be
// using the server connection this session used last, shown for a moment under this
// session's application_name.
inline seen_from_outside look_after(pqscope::connection& observer, const std::string& app_a, const std::string& app_b,
                                    const std::vector<std::string>& tables = {}, int base = 0) {
  seen_from_outside seen = look(observer, app_a, app_b, tables, base);
  for (int i = 0; i < 5 && !seen.in_transaction.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    seen = look(observer, app_a, app_b, tables, base);
  }
  return seen;
}

inline long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtol(v, nullptr, 10) : fallback;
}

}  // namespace pqtest::programs
