#pragma once
// The bodies of <pqscope/params.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/params.hpp>

namespace pqscope {

PQSCOPE_DECL bool value_traits<bool>::from_text(std::string_view s) {
  if (s == "t" || s == "true") return true;
  if (s == "f" || s == "false") return false;
  throw conversion_error("cannot read \"" + std::string(s) + "\" as bool (expected t or f)");
}

PQSCOPE_DECL std::string value_traits<date>::to_text(const date& d) {
  const std::int64_t days = d.days_since_epoch();
  if (days < detail::min_date_days || days > detail::max_date_days)
    throw conversion_error("date " + detail::format_date({d.year, d.month, d.day}) +
                           " is outside PostgreSQL's date range (4714-11-24 BC to 5874897-12-31)");
  return detail::format_date({d.year, d.month, d.day});
}

PQSCOPE_DECL date value_traits<date>::from_text(std::string_view s) {
  const detail::civil_date c = detail::parse_date(s);
  return date{static_cast<int>(c.year), c.month, c.day};
}

PQSCOPE_DECL timestamp_or_infinity::time_point timestamp_or_infinity::value() const {
  if (!is_finite())
    throw conversion_error(std::string("timestamp_or_infinity::value(): the timestamp is ") +
                           (is_infinity() ? "'infinity'" : "'-infinity'") + "; check is_finite() first");
  return time_;
}

PQSCOPE_DECL std::string value_traits<timestamp_or_infinity>::to_text(const timestamp_or_infinity& t) {
  if (t.is_infinity()) return "infinity";
  if (t.is_minus_infinity()) return "-infinity";
  return value_traits<timestamp_or_infinity::time_point>::to_text(t.value());
}

PQSCOPE_DECL timestamp_or_infinity value_traits<timestamp_or_infinity>::from_text(std::string_view s) {
  const detail::timestamp_text t = detail::parse_timestamp(s);
  if (t.infinite > 0) return timestamp_or_infinity::infinity();
  if (t.infinite < 0) return timestamp_or_infinity::minus_infinity();
  return detail::time_point_from_micros<timestamp_or_infinity::time_point>(t.micros, s);
}

PQSCOPE_DECL std::vector<std::byte> value_traits<std::vector<std::byte>>::from_text(std::string_view s) {
  return detail::bytea_from_text(s);
}

PQSCOPE_DECL void params::push(const char* value, unsigned oid) {
  if (types_.size() >= detail::max_params)
    throw usage_error("params: more than 65,535 parameters, PostgreSQL's limit for one statement; split the rows "
                      "over several statements, or send them as arrays or with COPY");
  text_.emplace_back(value != nullptr ? value : "");
  null_.push_back(value == nullptr);
  types_.push_back(oid);
}

PQSCOPE_DECL std::string values_list(std::size_t rows, std::size_t columns, std::size_t first) {
  if (columns == 0 && rows > 0) throw usage_error("values_list(): a row needs at least one column");
  std::string out;
  out.reserve(rows * columns * 8);
  std::size_t n = first;
  for (std::size_t r = 0; r < rows; ++r) {
    out += r == 0 ? "(" : ", (";
    for (std::size_t c = 0; c < columns; ++c) {
      if (c > 0) out += ", ";
      out += '$';
      out += std::to_string(n++);
    }
    out += ')';
  }
  return out;
}

}  // namespace pqscope

namespace pqscope::detail {

PQSCOPE_DECL void param_list::splice(const params& p) {
  for (std::size_t i = 0; i < p.size(); ++i) push(p.null_[i] ? nullptr : p.text_[i].c_str(), p.types_[i]);
}

PQSCOPE_DECL void param_list::push(const char* value, unsigned oid) {
  if (n_ >= max_params)
    throw usage_error("more than 65,535 parameters, PostgreSQL's limit for one statement");
  if (n_ < inline_params) {
    inline_values_[n_] = value;
    inline_types_[n_] = oid;
  } else {
    if (n_ == inline_params) {
      values_.assign(inline_values_, inline_values_ + inline_params);
      types_.assign(inline_types_, inline_types_ + inline_params);
    }
    values_.push_back(value);
    types_.push_back(oid);
  }
  ++n_;
}

PQSCOPE_DECL void param_list::push_null(unsigned oid) { push(nullptr, oid); }

PQSCOPE_DECL void param_list::check_nul(std::string_view s) const {
  // No string is longer than max_size(); saying so keeps GCC's -Wstringop-overread
  // from reading a path it cannot rule out as a bound of SIZE_MAX.
  if (s.size() > s.max_size()) return;
  if (std::memchr(s.data(), '\0', s.size()) != nullptr)
    throw usage_error("parameter $" + std::to_string(n_ + 1) +
                      " contains a NUL byte, which PostgreSQL text cannot hold; strip it, or send "
                      "binary data as hex text into a bytea column (decode($1, 'hex'))");
}

PQSCOPE_DECL void param_list::push_text(std::string_view s, unsigned oid, bool terminated) {
  check_nul(s);
  if (terminated) {
    push(s.data(), oid);
  } else if (const char* at = copy_inline(s)) {
    push(at, oid);
  } else {
    push_owned(std::string(s), oid);
  }
}

PQSCOPE_DECL const char* param_list::copy_inline(std::string_view s) noexcept {
  if (s.size() >= inline_text - inline_used_) return nullptr;
  char* at = inline_text_ + inline_used_;
  std::memcpy(at, s.data(), s.size());
  at[s.size()] = '\0';
  inline_used_ += s.size() + 1;
  return at;
}

PQSCOPE_DECL void param_list::take(param_list& o) noexcept {
  n_ = std::exchange(o.n_, 0);
  owned_capacity_ = o.owned_capacity_;
  inline_used_ = std::exchange(o.inline_used_, 0);
  std::memcpy(inline_text_, o.inline_text_, inline_used_);
  std::memcpy(inline_values_, o.inline_values_, sizeof inline_values_);
  std::memcpy(inline_types_, o.inline_types_, sizeof inline_types_);
  storage_ = std::move(o.storage_);
  values_ = std::move(o.values_);
  types_ = std::move(o.types_);
  o.storage_.clear();
  o.values_.clear();
  o.types_.clear();
  // Values in o's inline buffer now live at the same offset in this one.
  const auto from = reinterpret_cast<std::uintptr_t>(o.inline_text_);
  const char** v = n_ <= inline_params ? inline_values_ : values_.data();
  for (std::size_t i = 0; i < n_; ++i) {
    const auto at = reinterpret_cast<std::uintptr_t>(v[i]);
    if (v[i] != nullptr && at >= from && at < from + inline_used_) v[i] = inline_text_ + (at - from);
  }
}

PQSCOPE_DECL void param_list::push_number(std::string_view digits, unsigned oid) {
  if (const char* at = copy_inline(digits))
    push(at, oid);
  else
    push_owned(std::string(digits), oid);
}

PQSCOPE_DECL void param_list::push_owned(std::string s, unsigned oid) {
  check_nul(s);
  if (const char* at = copy_inline(s)) {
    push(at, oid);
    return;
  }
  if (storage_.empty()) storage_.reserve(owned_capacity_);
  if (storage_.size() == storage_.capacity()) throw usage_error("param_list: storage not reserved");  // never
  storage_.push_back(std::move(s));
  push(storage_.back().c_str(), oid);
}

}  // namespace pqscope::detail
