#include "engine/scheduler/stop_matcher.h"

#include <gtest/gtest.h>

namespace darkbloom::engine {
namespace {

TEST(StopMatcher, passes_text_through_without_stop_strings) {
  StopMatcher matcher({});
  EXPECT_EQ(matcher.push("hello"), "hello");
  EXPECT_FALSE(matcher.stopped());
}

TEST(StopMatcher, holds_back_a_possible_start_of_a_stop_string) {
  StopMatcher matcher({"END"});
  EXPECT_EQ(matcher.push("abc E"), "abc ");
  EXPECT_EQ(matcher.push("N"), "");
  EXPECT_EQ(matcher.push("x"), "ENx");
  EXPECT_FALSE(matcher.stopped());
}

TEST(StopMatcher, stops_before_a_stop_string_split_across_deltas) {
  StopMatcher matcher({"\n\n", "END"});
  EXPECT_EQ(matcher.push("one E"), "one ");
  EXPECT_EQ(matcher.push("NDtwo"), "");
  EXPECT_TRUE(matcher.stopped());
  EXPECT_EQ(matcher.push("more"), "");
}

TEST(StopMatcher, earliest_stop_string_wins) {
  StopMatcher matcher({"cd", "b"});
  EXPECT_EQ(matcher.push("abcd"), "a");
  EXPECT_TRUE(matcher.stopped());
}

TEST(StopMatcher, flush_returns_held_text) {
  StopMatcher matcher({"xyz"});
  EXPECT_EQ(matcher.push("abxy"), "ab");
  EXPECT_EQ(matcher.flush(), "xy");
}

}  // namespace
}  // namespace darkbloom::engine
