#pragma once
// Model-based random programs of nested scopes, shared by tests/model.cpp (the
// blocking connection) and tests/asio_model.cpp (the asynchronous one): the
// program generator, the runner on the blocking library, and the model of the
// expected semantics (Django's atomic), written from the contract rather than
// from the code. See tests/model.cpp for what is checked.

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
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
  std::vector<op> body;
};

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
  } catch (const pqscope::usage_error& u) {
    return std::string("usage_error: ") + u.what();
  } catch (const std::exception& x) {
    return std::string("unexpected: ") + x.what();
  }
}

class generator {
 public:
  explicit generator(std::uint64_t seed) : rng_(seed) {}

  std::shared_ptr<scope_node> program() {
    next_id_ = 1;
    return scope(0);
  }

 private:
  bool chance(int percent) { return std::uniform_int_distribution<int>(0, 99)(rng_) < percent; }

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
  os << (s.atomic ? "atomic" : "transaction") << (s.savepoint ? "" : "(savepoint=false)") << " {\n";
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

  observed run(const scope_node& program) {
    try {
      scope(program, true);
      out_.trace.push_back("escaped: none");
    } catch (...) {
      out_.trace.push_back("escaped: " + category(std::current_exception()));
    }
    for (const auto& row : c_.execute("SELECT id FROM " + table_ + " WHERE id > $1", base_))
      out_.committed.insert(row[0].as<int>() - base_);
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
    pqscope::transaction_options opts;
    opts.savepoint = s.savepoint;
    opts.batch = batch_ && root;
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
        frames_.back().rows.push_back(o.id);
        break;
      case op::fail: {
        if (doom_) aborted();
        std::size_t level = frames_.size() - 1;
        while (level > 0 && !frames_[level].owning) --level;
        doom_ = level;
        throw pqscope::unique_violation("duplicate", "23505", "", "");
      }
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
  observed out_;
};

// ---- helpers ---------------------------------------------------------------------

struct counts {
  long programs = 0, scopes = 0, statements = 0, exceptions = 0;
};

inline void count(const scope_node& s, counts& n) {
  ++n.scopes;
  for (const op& o : s.body) {
    if (o.k == op::insert || o.k == op::fail || o.k == op::read) ++n.statements;
    if (o.k == op::nested) count(*o.scope, n);
  }
}

// Shrinking: a copy of a program, and every program one step smaller.
inline std::shared_ptr<scope_node> copy(const scope_node& s) {
  auto c = std::make_shared<scope_node>(s);
  for (op& o : c->body)
    if (o.scope) o.scope = copy(*o.scope);
  return c;
}

// Every program one step smaller than s.
inline std::vector<std::shared_ptr<scope_node>> smaller(const scope_node& s) {
  std::vector<std::shared_ptr<scope_node>> out;
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

inline long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtol(v, nullptr, 10) : fallback;
}

}  // namespace pqtest::programs
