#define BOOST_TEST_MODULE callback
#include <boost/test/unit_test.hpp>

// pqscope::callback, the std::function stand-in of the observer and the
// on_commit/on_rollback callbacks: what std::function does, for the callables
// kept inside (a few references) and for those kept on the heap (captures by value).

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <pqscope/callback.hpp>

namespace {

int twice(int v) { return 2 * v; }

// Counts its live copies, so leaks and double destruction show.
struct counted {
  std::shared_ptr<int> live = std::make_shared<int>(0);
  std::string text = std::string(100, 'x');  // not byte-copyable: kept on the heap
  int operator()(int v) const { return v + static_cast<int>(text.size()); }
};

BOOST_AUTO_TEST_CASE(empty_and_null) {
  pqscope::callback<int(int)> c;
  BOOST_TEST(!c);
  BOOST_TEST((c == nullptr));
  BOOST_CHECK_THROW(c(1), pqscope::usage_error);
  pqscope::callback<int(int)> from_null_pointer{static_cast<int (*)(int)>(nullptr)};
  BOOST_TEST(!from_null_pointer);
  pqscope::callback<int(int)> from_empty_function{std::function<int(int)>{}};
  BOOST_TEST(!from_empty_function);
  pqscope::callback<int(int)> set{&twice};
  BOOST_TEST((set != nullptr));
  set = nullptr;
  BOOST_TEST(!set);
}

BOOST_AUTO_TEST_CASE(local_callables) {
  int calls = 0;
  pqscope::callback<int(int)> c{[&calls](int v) { return ++calls + v; }};  // one reference: kept inside
  BOOST_TEST(c(10) == 11);
  pqscope::callback<int(int)> copy = c;
  BOOST_TEST(copy(10) == 12);  // the same reference
  pqscope::callback<int(int)> moved = std::move(c);
  BOOST_TEST(!c);  // NOLINT(bugprone-use-after-move): moved-from is empty, as documented
  BOOST_TEST(moved(10) == 13);
  BOOST_TEST(pqscope::callback<int(int)>{&twice}(21) == 42);
}

BOOST_AUTO_TEST_CASE(heap_callables_are_copied_and_freed) {
  counted f;
  std::weak_ptr<int> watch = f.live;
  {
    pqscope::callback<int(int)> c{f};
    BOOST_TEST(f.live.use_count() == 2);
    pqscope::callback<int(int)> copy = c;
    BOOST_TEST(f.live.use_count() == 3);
    BOOST_TEST(copy(1) == 101);
    pqscope::callback<int(int)> moved = std::move(copy);
    BOOST_TEST(f.live.use_count() == 3);  // a move takes the pointer, copies nothing
    c = moved;                            // copy-assign over a heap callable
    BOOST_TEST(f.live.use_count() == 3);
    c = [](int v) { return v; };  // assign a local one over it
    BOOST_TEST(f.live.use_count() == 2);
    BOOST_TEST(c(5) == 5);
    swap(c, moved);
    BOOST_TEST(c(1) == 101);
    BOOST_TEST(moved(1) == 1);
  }
  BOOST_TEST(f.live.use_count() == 1);  // every copy freed
  f = counted{};
  BOOST_TEST(watch.expired());
}

BOOST_AUTO_TEST_CASE(std_function_both_ways) {
  std::function<int(int)> f = [](int v) { return v * 3; };
  pqscope::callback<int(int)> c{f};
  BOOST_TEST(c(2) == 6);
  std::function<int(int)> back = c;
  BOOST_TEST(back(3) == 9);
  pqscope::callback<void()> v{[] {}};
  v();
  std::string seen;
  pqscope::callback<void(const std::string&)> by_ref{[&seen](const std::string& s) { seen = s; }};
  by_ref("observer");
  BOOST_TEST(seen == "observer");
}

}  // namespace
