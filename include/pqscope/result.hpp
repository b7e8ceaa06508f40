#pragma once
// Query results. result, row and field share ownership of the underlying
// PGresult, so a row or field stays valid after the result object is gone.

#include <cstddef>
#include <array>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/errors.hpp>
#include <pqscope/fields.hpp>
#include <pqscope/params.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope {

class row;

namespace detail {
class row_of_temporary;
class field_of_temporary;
// Values that point into the text they were read from rather than own a copy.
template <class T>
struct is_text_view : std::false_type {};
template <>
struct is_text_view<std::string_view> : std::true_type {};
template <>
struct is_text_view<std::optional<std::string_view>> : std::true_type {};

struct pg_result_deleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using result_handle = std::shared_ptr<PGresult>;
PQSCOPE_DECL result_handle adopt(PGresult* r);
}  // namespace detail

class result;

namespace detail {
// The answer to a statement that waits in a batched attempt's queue.
class deferred_answer {
 public:
  deferred_answer() = default;
  deferred_answer(const deferred_answer&) = delete;
  deferred_answer& operator=(const deferred_answer&) = delete;
  deferred_answer(deferred_answer&&) = delete;
  deferred_answer& operator=(deferred_answer&&) = delete;
  virtual ~deferred_answer() = default;
  // Sends what is queued if it has not gone out yet, then returns the answer or
  // throws what the statement raised.
  virtual result wait() = 0;
};
}  // namespace detail

class field {
 public:
  [[nodiscard]] bool is_null() const { return PQgetisnull(res_.get(), row_, col_) != 0; }
  // The text as the server sent it; empty for NULL.
  [[nodiscard]] std::string_view text() const {
    return {PQgetvalue(res_.get(), row_, col_), static_cast<std::size_t>(PQgetlength(res_.get(), row_, col_))};
  }
  [[nodiscard]] std::string_view name() const { return PQfname(res_.get(), col_); }
  [[nodiscard]] std::size_t row_index() const noexcept { return static_cast<std::size_t>(row_); }
  [[nodiscard]] std::size_t column_index() const noexcept { return static_cast<std::size_t>(col_); }

  // Converts the value; std::optional<T> reads NULL as std::nullopt. A NULL read
  // as a non-optional type, or text that does not convert, throws conversion_error.
  template <class T>
  [[nodiscard]] T as() const {
    if constexpr (detail::is_optional<T>::value) {
      if (is_null()) return std::nullopt;
      return T(as<typename T::value_type>());
    } else {
      static_assert(detail::has_from_text<T>::value,
                    "pqscope: no value_traits<T>::from_text for this type; specialize "
                    "pqscope::value_traits<T> (see params.hpp)");
      if (is_null())
        throw conversion_error("column \"" + std::string(name()) + "\" of row " + std::to_string(row_) +
                               " is NULL; read it as std::optional<T>");
      try {
        if constexpr (detail::has_delimited_from_text<T>::value)  // arrays: box[] separates with ';'
          return value_traits<T>::from_text(text(), detail::array_delimiter(PQftype(res_.get(), col_)));
        else
          return value_traits<T>::from_text(text());
      } catch (const conversion_error& e) {
        throw conversion_error(std::string(e.what()) + " (column \"" + std::string(name()) + "\" of row " +
                               std::to_string(row_) + ")");
      }
    }
  }

 private:
  friend class row;
  field(detail::result_handle r, int row, int col) : res_(std::move(r)), row_(row), col_(col) {}
  detail::result_handle res_;
  int row_, col_;
};

// The answer to one statement. In a batched attempt (transaction_options::batch)
// execute() returns it before the statement is sent: the first use of any member
// sends everything queued and waits, and throws if the statement failed.
class result {
 public:
  class const_iterator;

  result() = default;
  explicit result(detail::result_handle r) : res_(std::move(r)) {}
  explicit result(std::shared_ptr<detail::deferred_answer> pending) : pending_(std::move(pending)) {}

  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] bool empty() const { return size() == 0; }
  [[nodiscard]] std::size_t columns() const;
  [[nodiscard]] std::string_view column_name(std::size_t i) const&;
  [[nodiscard]] std::string column_name(std::size_t i) const&& { return std::string(column_name(i)); }
  // Exact, case-sensitive match on the name the server sent; usage_error if absent.
  [[nodiscard]] std::size_t column_index(std::string_view name) const;
  // Rows inserted, updated, deleted, ... by the command; 0 for commands that report none.
  [[nodiscard]] std::uint64_t affected_rows() const;
  // The command tag, e.g. "INSERT 0 1".
  [[nodiscard]] std::string_view command() const& { return get() != nullptr ? PQcmdStatus(res_.get()) : ""; }

  [[nodiscard]] row operator[](std::size_t i) const&;
  [[nodiscard]] const_iterator begin() const&;
  [[nodiscard]] const_iterator end() const&;

  // Every row as a T listed with PQSCOPE_FIELDS (fields.hpp): by column name, or by
  // position. The columns are matched and their types checked once, before any row.
  template <class T>
  [[nodiscard]] std::vector<T> to_vector() const& {
    return collect<T>(false);
  }
  template <class T>
  [[nodiscard]] std::vector<T> to_vector(by_position_t) const& {
    return collect<T>(true);
  }
  // From a temporary result, members that view its memory would dangle: refused.
  template <class T>
  [[nodiscard]] std::vector<T> to_vector() const&& {
    static_assert(!detail::fields_hold_view<T>::value,
                  "pqscope: to_vector<T>() of a temporary result, where T has a std::string_view member, would "
                  "point into memory freed at the end of this expression; keep the result in a variable first");
    return collect<T>(false);
  }
  template <class T>
  [[nodiscard]] std::vector<T> to_vector(by_position_t) const&& {
    static_assert(!detail::fields_hold_view<T>::value,
                  "pqscope: to_vector<T>() of a temporary result, where T has a std::string_view member, would "
                  "point into memory freed at the end of this expression; keep the result in a variable first");
    return collect<T>(true);
  }

  // A temporary result (conn.execute(...)) is freed at the end of the full expression,
  // so nothing it hands out may point into it: strings are copies, rows and fields
  // refuse string_view at compile time (detail::row_of_temporary), and iterators,
  // which would point to the result object itself, are refused.
  [[nodiscard]] std::string command() const&& { return std::string(command()); }
  [[nodiscard]] detail::row_of_temporary operator[](std::size_t i) const&&;
  const_iterator begin() const&& = delete;
  const_iterator end() const&& = delete;

  [[nodiscard]] PGresult* native_handle() const { return get(); }

 private:
  friend class row;
  template <class T>
  std::vector<T> collect(bool by_position) const;
  // The answer, once it is here; waits for it first if the statement is queued.
  PGresult* get() const;
  void check_column(std::size_t i) const;
  mutable detail::result_handle res_;
  mutable std::shared_ptr<detail::deferred_answer> pending_;
};

class row {
 public:
  [[nodiscard]] std::size_t size() const { return res_.columns(); }
  [[nodiscard]] std::size_t index() const noexcept { return static_cast<std::size_t>(row_); }
  [[nodiscard]] field operator[](std::size_t col) const {
    res_.check_column(col);
    return field(res_.res_, row_, static_cast<int>(col));
  }
  [[nodiscard]] field operator[](std::string_view name) const { return (*this)[res_.column_index(name)]; }

  // Converts the whole row: auto [id, name] = row.as<int, std::string>();
  template <class... Ts>
  [[nodiscard]] std::tuple<Ts...> as() const {
    if (sizeof...(Ts) != size())
      throw usage_error("row.as<...>() asked for " + std::to_string(sizeof...(Ts)) + " column(s) but the row has " +
                        std::to_string(size()));
    return as_impl<Ts...>(std::index_sequence_for<Ts...>{});
  }

  // The row as a T listed with PQSCOPE_FIELDS (fields.hpp): each member from the column
  // of its name (every column filling one member), or by position. Column types are
  // checked against the members' first; errors name the column.
  template <class T>
  [[nodiscard]] T to() const;
  template <class T>
  [[nodiscard]] T to(by_position_t) const;

 private:
  friend class result;
  row(result r, int i) : res_(std::move(r)), row_(i) {}
  template <class T, std::size_t N>
  T fill(const std::array<int, N>& columns) const;
  template <class... Ts, std::size_t... I>
  std::tuple<Ts...> as_impl(std::index_sequence<I...>) const {
    return std::tuple<Ts...>((*this)[I].template as<Ts>()...);
  }
  result res_;
  int row_;
};

class result::const_iterator {
 public:
  using iterator_category = std::forward_iterator_tag;
  using value_type = row;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = row;

  const_iterator() = default;
  row operator*() const { return (*res_)[i_]; }
  const_iterator& operator++() {
    ++i_;
    return *this;
  }
  const_iterator operator++(int) {
    auto old = *this;
    ++i_;
    return old;
  }
  friend bool operator==(const const_iterator& a, const const_iterator& b) { return a.i_ == b.i_; }
  friend bool operator!=(const const_iterator& a, const const_iterator& b) { return a.i_ != b.i_; }

 private:
  friend class result;
  const_iterator(const result* r, std::size_t i) : res_(r), i_(i) {}
  const result* res_ = nullptr;
  std::size_t i_ = 0;
};

inline row result::operator[](std::size_t i) const& {
  if (i >= size())
    throw usage_error("row index " + std::to_string(i) + " is out of range: the result has " + std::to_string(size()) +
                      " row(s)");
  return row(*this, static_cast<int>(i));
}
inline result::const_iterator result::begin() const& { return const_iterator(this, 0); }
inline result::const_iterator result::end() const& { return const_iterator(this, size()); }

namespace detail {
// A field reached from a temporary result: conn.execute(...)[0][0]. It shares the
// result, so kept in a variable it is a field like any other; used as a temporary
// itself it is the result's last owner, freed at the end of the full expression, so
// as<std::string_view>() would dangle (a heap use-after-free) and is refused.
class field_of_temporary : public field {
 public:
  explicit field_of_temporary(field f) : field(std::move(f)) {}

  [[nodiscard]] std::string_view text() const& { return field::text(); }
  [[nodiscard]] std::string text() const&& { return std::string(field::text()); }
  [[nodiscard]] std::string_view name() const& { return field::name(); }
  [[nodiscard]] std::string name() const&& { return std::string(field::name()); }
  template <class T>
  [[nodiscard]] T as() const& {
    return field::as<T>();
  }
  template <class T>
  [[nodiscard]] T as() const&& {
    static_assert(!is_text_view<T>::value,
                  "pqscope: as<std::string_view>() on a field of a temporary result would point into memory freed "
                  "at the end of this expression; keep the result in a variable first (auto r = "
                  "conn.execute(...); r[0][0].as<std::string_view>()), or read a std::string");
    return field::as<T>();
  }
};

// A row of a temporary result: conn.execute(...)[0]. The same rule as field_of_temporary.
class row_of_temporary : public row {
 public:
  explicit row_of_temporary(row r) : row(std::move(r)) {}

  [[nodiscard]] field operator[](std::size_t col) const& { return row::operator[](col); }
  [[nodiscard]] field operator[](std::string_view name) const& { return row::operator[](name); }
  [[nodiscard]] field_of_temporary operator[](std::size_t col) const&& {
    return field_of_temporary(row::operator[](col));
  }
  [[nodiscard]] field_of_temporary operator[](std::string_view name) const&& {
    return field_of_temporary(row::operator[](name));
  }
  template <class... Ts>
  [[nodiscard]] std::tuple<Ts...> as() const& {
    return row::as<Ts...>();
  }
  template <class... Ts>
  [[nodiscard]] std::tuple<Ts...> as() const&& {
    static_assert(!(is_text_view<Ts>::value || ...),
                  "pqscope: as<std::string_view>() on a row of a temporary result would point into memory freed at "
                  "the end of this expression; keep the result in a variable first (auto r = conn.execute(...); "
                  "r[0].as<...>()), or read a std::string");
    return row::as<Ts...>();
  }
  template <class T>
  [[nodiscard]] T to() const& {
    return row::to<T>();
  }
  template <class T>
  [[nodiscard]] T to(by_position_t p) const& {
    return row::to<T>(p);
  }
  template <class T>
  [[nodiscard]] T to() const&& {
    static_assert(!fields_hold_view<T>::value, "pqscope: to<T>() of a row of a temporary result, where T has a std::string_view member, would point "
                  "into memory freed at the end of this expression; keep the result in a variable first, or make "
                  "the member a std::string");
    return row::to<T>();
  }
  template <class T>
  [[nodiscard]] T to(by_position_t p) const&& {
    static_assert(!fields_hold_view<T>::value, "pqscope: to<T>() of a row of a temporary result, where T has a std::string_view member, would point "
                  "into memory freed at the end of this expression; keep the result in a variable first, or make "
                  "the member a std::string");
    return row::to<T>(p);
  }
};
}  // namespace detail

inline detail::row_of_temporary result::operator[](std::size_t i) const&& {
  return detail::row_of_temporary((*this)[i]);
}

}  // namespace pqscope

#include <pqscope/impl/row_to.hpp>

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/result.ipp>
#endif
