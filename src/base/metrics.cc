#include "base/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace darkbloom::metrics {
namespace {

// A label value with \, " and newlines escaped, as the text format wants.
std::string escape(const std::string& value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string label_text(const Labels& labels, const std::string& extra_name = {}, const std::string& extra = {}) {
  if (labels.empty() && extra_name.empty()) return {};
  std::string text = "{";
  for (const auto& [name, value] : labels) {
    if (text.size() > 1) text += ",";
    text += fmt::format("{}=\"{}\"", name, escape(value));
  }
  if (!extra_name.empty()) {
    if (text.size() > 1) text += ",";
    text += fmt::format("{}=\"{}\"", extra_name, extra);
  }
  return text + "}";
}

std::string number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  if (value == std::floor(value) && std::fabs(value) < 1e15) return fmt::format("{}", static_cast<int64_t>(value));
  return fmt::format("{}", value);
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end())) throw std::invalid_argument("histogram bounds must increase");
}

void Histogram::observe(double value) {
  const size_t bucket = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  std::lock_guard lock(mutex_);
  counts_[bucket] += 1;
  sum_ += value;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot snapshot;
  snapshot.bounds = bounds_;
  std::lock_guard lock(mutex_);
  uint64_t running = 0;
  for (const uint64_t count : counts_) {
    running += count;
    snapshot.cumulative.push_back(running);
  }
  snapshot.count = running;
  snapshot.sum = sum_;
  return snapshot;
}

std::vector<double> latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

Counter& CounterFamily::at(const Labels& labels) {
  std::lock_guard lock(mutex_);
  auto& counter = counters_[labels];
  if (!counter) counter = std::make_unique<Counter>();
  return *counter;
}

std::vector<std::pair<Labels, uint64_t>> CounterFamily::values() const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<Labels, uint64_t>> values;
  for (const auto& [labels, counter] : counters_) values.emplace_back(labels, counter->value());
  return values;
}

Registry::Family& Registry::family(const std::string& name, const std::string& help, const std::string& type) {
  for (auto& existing : families_) {
    if (existing.name == name) {
      if (existing.type != type) throw std::invalid_argument("metric " + name + " registered with two types");
      return existing;
    }
  }
  families_.push_back(Family{name, help, type, {}});
  return families_.back();
}

void Registry::counter(const std::string& name, const std::string& help, Labels labels, const Counter& counter) {
  std::lock_guard lock(mutex_);
  family(name, help, "counter").series.push_back(Series{std::move(labels), [&counter] {
                                                          return static_cast<double>(counter.value());
                                                        }});
}

void Registry::counter(const std::string& name, const std::string& help, const CounterFamily& counters) {
  std::lock_guard lock(mutex_);
  family(name, help, "counter").series.push_back(Series{{}, nullptr, nullptr, &counters});
}

void Registry::counter(const std::string& name, const std::string& help, Labels labels, std::function<double()> read) {
  std::lock_guard lock(mutex_);
  family(name, help, "counter").series.push_back(Series{std::move(labels), std::move(read)});
}

void Registry::gauge(const std::string& name, const std::string& help, Labels labels, std::function<double()> read) {
  std::lock_guard lock(mutex_);
  family(name, help, "gauge").series.push_back(Series{std::move(labels), std::move(read)});
}

void Registry::histogram(const std::string& name, const std::string& help, Labels labels, const Histogram& histogram) {
  std::lock_guard lock(mutex_);
  family(name, help, "histogram").series.push_back(Series{std::move(labels), nullptr, &histogram});
}

std::string Registry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const Family& family : families_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", family.name, family.help, family.name, family.type);
    for (const Series& series : family.series) {
      if (series.family != nullptr) {
        for (const auto& [labels, value] : series.family->values()) {
          out += fmt::format("{}{} {}\n", family.name, label_text(labels), value);
        }
      } else if (series.histogram != nullptr) {
        const Histogram::Snapshot snapshot = series.histogram->snapshot();
        for (size_t i = 0; i < snapshot.cumulative.size(); ++i) {
          const std::string bound = i < snapshot.bounds.size() ? number(snapshot.bounds[i]) : "+Inf";
          out += fmt::format("{}_bucket{} {}\n", family.name, label_text(series.labels, "le", bound),
                             snapshot.cumulative[i]);
        }
        out += fmt::format("{}_sum{} {}\n", family.name, label_text(series.labels), number(snapshot.sum));
        out += fmt::format("{}_count{} {}\n", family.name, label_text(series.labels), snapshot.count);
      } else {
        out += fmt::format("{}{} {}\n", family.name, label_text(series.labels), number(series.read()));
      }
    }
  }
  return out;
}

}  // namespace darkbloom::metrics
