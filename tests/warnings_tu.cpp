// Compiled (never run) by warnings.cmake with -Wall -Wextra -Wpedantic -Werror.
// Warnings in templates only show up once they are instantiated, so this file
// uses every public template with a spread of argument types.
#include <pqscope/pqscope.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace {

struct point {
  int x = 0, y = 0;
};

}  // namespace

// The customization point, both directions.
template <>
struct pqscope::value_traits<point> {
  static constexpr unsigned oid = 600;
  static std::string to_text(const point& p) { return "(" + std::to_string(p.x) + "," + std::to_string(p.y) + ")"; }
  static point from_text(std::string_view s) {
    if (s.empty()) throw conversion_error("empty point");
    return point{};
  }
};

namespace {

// A driver that wraps libpq_driver: basic_connection must work with other drivers.
class counting_driver {
 public:
  void open(const std::string& conninfo, const std::string& app) { inner_.open(conninfo, app); }
  void close() noexcept { inner_.close(); }
  void abandon() noexcept { inner_.abandon(); }
  [[nodiscard]] bool is_open() const noexcept { return inner_.is_open(); }
  pqscope::batch_reply exchange(const std::vector<pqscope::statement>& batch) {
    ++exchanges;
    return inner_.exchange(batch);
  }
  [[nodiscard]] std::string application_name() const { return inner_.application_name(); }
  [[nodiscard]] PGconn* native_handle() const noexcept { return inner_.native_handle(); }

  int exchanges = 0;

 private:
  pqscope::libpq_driver inner_;
};

template <class Connection>
void execute_params(Connection& c) {
  const std::string s = "text";
  const std::string_view sv = "view";
  const char* cs = "c string";
  char buf[] = "array";
  const std::optional<int> some = 1, none;
  const std::optional<std::string> os = std::string("x");
  c.execute("SELECT 1");
  c.execute(std::string("SELECT $1"), 1);
  c.execute(std::string_view("SELECT $1"), s);
  c.execute("SELECT $1, $2, $3, $4", sv, cs, buf, "literal");
  c.execute("SELECT $1, $2, $3, $4, $5", true, 2L, 3LL, 4U, std::uint64_t{5});
  c.execute("SELECT $1, $2, $3, $4", short{6}, static_cast<signed char>(7), static_cast<unsigned char>(8),
            std::int16_t{9});
  c.execute("SELECT $1, $2", 1.5, 2.5F);
  c.execute("SELECT $1, $2, $3, $4, $5", some, none, os, nullptr, std::nullopt);
  c.execute("SELECT $1", point{1, 2});
}

template <class Connection>
long read_results(Connection& c) {
  long sum = 0;
  pqscope::result r = c.execute("SELECT 1, 'a', 2.0, true, NULL");
  for (const auto& row : r) {
    auto [i, t, d, b, n] = row.template as<int, std::string, double, bool, std::optional<long>>();
    sum += i + static_cast<long>(t.size()) + static_cast<long>(d) + b + n.value_or(0);
    sum += static_cast<long>(row[0].template as<std::int64_t>());
    sum += static_cast<long>(row["a"].template as<std::string_view>().size());
    sum += static_cast<long>(row[1].template as<std::optional<std::string>>().value_or("").size());
    sum += static_cast<long>(row[2].template as<float>());
    sum += row[3].template as<bool>() ? 1 : 0;
    sum += static_cast<long>(row[0].template as<unsigned short>());
    sum += static_cast<long>(row[0].template as<std::uint64_t>());
    sum += row[0].template as<point>().x;
    sum += row[4].is_null() ? 1 : 0;
  }
  if (!r.empty()) {
    const pqscope::row first = r[0];
    sum += static_cast<long>(first.size() + first.index() + r.columns() + r.column_index("a") + r.affected_rows() +
                             r.command().size() + r.column_name(0).size());
  }
  sum += c.template query_value<int>("SELECT 1");
  sum += c.template query_value<long>("SELECT $1::bigint", 2L);
  sum += static_cast<long>(c.template query_value<std::string>("SELECT $1", "x").size());
  sum += c.template query_value<std::optional<int>>("SELECT NULL::int").value_or(0);
  sum += static_cast<long>(c.template query_value<double>("SELECT $1 + $2", 1.0, 2));
  return sum;
}

void add(pqscope::connection& c, int n) { c.execute("INSERT INTO t VALUES ($1)", n); }
int count(pqscope::connection& c) { return c.query_value<int>("SELECT count(*) FROM t"); }

template <class Connection>
void scopes(Connection& c) {
  {
    pqscope::transaction tx{c};
    pqscope::transaction_options o;
    o.isolation = pqscope::isolation::serializable;
    o.read_only = true;
    o.statement_timeout = std::chrono::milliseconds(100);
    pqscope::transaction inner{c, o};
    c.set_local("work_mem", "64MB");
    c.on_commit([] {});
    c.on_rollback([&c] { (void)c.depth(); });
    pqscope::transaction moved{std::move(inner)};
    moved.rollback();
    if (tx.is_outermost()) tx.commit();
  }

  pqscope::atomic(c, [] {});
  pqscope::atomic(c, [](Connection& conn) { conn.execute("SELECT 1"); });
  const int v = pqscope::atomic(c, [&] { return c.template query_value<int>("SELECT 1"); });
  pqscope::transaction_options retry;
  retry.retries = 3;
  const std::string s = pqscope::atomic(c, retry, [](Connection& conn) {
    return conn.template query_value<std::string>("SELECT 'x'");
  });
  const auto t = pqscope::atomic(c, retry, [&]() -> std::tuple<int, std::string> { return {v, s}; });
  (void)t;
  (void)c.in_transaction();
  (void)c.stats().round_trips;
  (void)c.application_name();
  (void)c.native_handle();
  (void)c.conninfo();
  (void)c.driver();
  c.reconnect();
}

}  // namespace

int main(int argc, char** argv) {
  const pqscope::database db{argc > 1 ? argv[1] : "postgresql://localhost/postgres"};
  try {
    pqscope::connection c = db.connect();
    execute_params(c);
    long total = read_results(c);
    scopes(c);

    auto add_tx = pqscope::transactional(add);
    add_tx(c, 1);
    pqscope::transaction_options serializable;
    serializable.isolation = pqscope::isolation::serializable;
    auto count_tx = pqscope::transactional(count, serializable);
    total += count_tx(c);
    auto lambda_tx = pqscope::transactional([](pqscope::connection& conn, const std::string& a, int b) {
      return conn.query_value<std::string>("SELECT $1 || $2", a, b);
    });
    total += static_cast<long>(lambda_tx(c, std::string("a"), 2).size());

    pqscope::basic_connection<counting_driver> counted{db.conninfo()};
    execute_params(counted);
    total += read_results(counted);
    scopes(counted);
    total += counted.driver().exchanges;

    pqscope::connection other = db.connect();
    other = std::move(c);
    return total == 0 ? 0 : 1;
  } catch (const pqscope::transaction_aborted& e) {
    return e.first_sqlstate().empty() ? 2 : 3;
  } catch (const pqscope::sql_error& e) {
    return e.sqlstate() == "40001" ? 4 : 5;
  } catch (const pqscope::error&) {
    return 6;
  }
}
