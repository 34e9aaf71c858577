// The Prometheus text format as the metrics registry writes it: families with HELP and TYPE,
// labels escaped, counters from several sources, cumulative histogram buckets with +Inf, _sum and
// _count.
#include "base/metrics.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace darkbloom::metrics {
namespace {

TEST(Metrics, counters_of_one_family_share_help_and_type_and_escape_label_values) {
  Registry registry;
  Counter in;
  Counter out;
  in.add(3);
  out.add();
  registry.counter("tokens_total", "tokens billed", {{"direction", "in"}}, in);
  registry.counter("tokens_total", "tokens billed", {{"direction", "out"}}, out);
  CounterFamily requests;
  requests.at({{"route", "/v1/\"x\"\\y\n"}}).add(2);
  registry.counter("requests_total", "requests", requests);
  registry.gauge("queue_depth", "waiting", {}, [] { return 1.5; });
  EXPECT_EQ(registry.render(),
            "# HELP tokens_total tokens billed\n"
            "# TYPE tokens_total counter\n"
            "tokens_total{direction=\"in\"} 3\n"
            "tokens_total{direction=\"out\"} 1\n"
            "# HELP requests_total requests\n"
            "# TYPE requests_total counter\n"
            "requests_total{route=\"/v1/\\\"x\\\"\\\\y\\n\"} 2\n"
            "# HELP queue_depth waiting\n"
            "# TYPE queue_depth gauge\n"
            "queue_depth 1.5\n");
}

TEST(Metrics, histogram_buckets_are_cumulative_with_inf_sum_and_count) {
  Registry registry;
  Histogram latency({0.1, 1});
  for (const double value : {0.05, 0.1, 0.5, 2.0}) latency.observe(value);
  registry.histogram("latency_seconds", "latency", {{"phase", "queue"}}, latency);
  EXPECT_EQ(registry.render(),
            "# HELP latency_seconds latency\n"
            "# TYPE latency_seconds histogram\n"
            "latency_seconds_bucket{phase=\"queue\",le=\"0.1\"} 2\n"
            "latency_seconds_bucket{phase=\"queue\",le=\"1\"} 3\n"
            "latency_seconds_bucket{phase=\"queue\",le=\"+Inf\"} 4\n"
            "latency_seconds_sum{phase=\"queue\"} 2.65\n"
            "latency_seconds_count{phase=\"queue\"} 4\n");
}

TEST(Metrics, a_name_cannot_change_its_type) {
  Registry registry;
  Counter counter;
  registry.counter("x", "x", {}, counter);
  EXPECT_THROW(registry.gauge("x", "x", {}, [] { return 0.0; }), std::invalid_argument);
}

TEST(Metrics, counts_from_several_threads_are_not_lost) {
  Counter counter;
  Histogram histogram(latency_buckets());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        counter.add();
        histogram.observe(0.001);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter.value(), 40000u);
  EXPECT_EQ(histogram.snapshot().count, 40000u);
}

}  // namespace
}  // namespace darkbloom::metrics
