// Metrics in the Prometheus text format (version 0.0.4). Components own plain, thread-safe
// Counters and Histograms (no registry needed to count); a Registry names them, adds gauges and
// counters read at scrape time, and renders everything. Labels are for low-cardinality values
// only (a route, a status class, a phase, a trust level, a model): never a key, account,
// request id or address.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace darkbloom::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Histogram {
 public:
  // `bounds`: upper bounds of the buckets, increasing (the +Inf bucket is implied).
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
};

// Buckets for latencies in seconds, 0.5 ms to 60 s.
std::vector<double> latency_buckets();

// Counters made on first use for each set of label values (a route and a status class, say).
class CounterFamily {
 public:
  Counter& at(const Labels& labels);
  std::vector<std::pair<Labels, uint64_t>> values() const;

 private:
  mutable std::mutex mutex_;
  std::map<Labels, std::unique_ptr<Counter>> counters_;
};

class Registry {
 public:
  void counter(const std::string& name, const std::string& help, Labels labels, const Counter& counter);
  void counter(const std::string& name, const std::string& help, const CounterFamily& family);
  // A counter kept by someone else, read at scrape time.
  void counter(const std::string& name, const std::string& help, Labels labels, std::function<double()> read);
  void gauge(const std::string& name, const std::string& help, Labels labels, std::function<double()> read);
  void histogram(const std::string& name, const std::string& help, Labels labels, const Histogram& histogram);

  // Every metric, families in registration order, in the Prometheus text format.
  std::string render() const;

 private:
  struct Series {
    Labels labels;
    std::function<double()> read;  // counters and gauges
    const Histogram* histogram = nullptr;
    const CounterFamily* family = nullptr;
  };
  struct Family {
    std::string name;
    std::string help;
    std::string type;
    std::vector<Series> series;
  };
  Family& family(const std::string& name, const std::string& help, const std::string& type);

  mutable std::mutex mutex_;
  std::deque<Family> families_;
};

// "text/plain; version=0.0.4; charset=utf-8"
inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace darkbloom::metrics
