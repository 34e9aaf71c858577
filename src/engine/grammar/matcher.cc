#include "engine/grammar/matcher.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace darkbloom::engine::grammar {
namespace {

// Masks are cached until they take this much memory, then half of them are dropped.
constexpr size_t kMaskCacheBytes = 16u << 20;
// Stacks one runtime may intern before it refuses to go further (a runaway grammar).
constexpr size_t kMaxStacks = 1u << 20;
// One closure takes at most this many steps (rule references and returns); paths beyond are
// dropped, which only narrows what may be generated.
constexpr size_t kMaxClosureSteps = 1u << 16;
// A state keeps at most this many stacks (an anyOf of very many similar branches).
constexpr size_t kMaxStacksPerState = 4096;

uint64_t node_key(int32_t position, int32_t parent) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(position)) << 32) | static_cast<uint32_t>(parent);
}

std::string state_key(const MatchState& state) {
  std::string key(state.stacks.size() * sizeof(int32_t) + 1, '\0');
  std::memcpy(key.data(), state.stacks.data(), state.stacks.size() * sizeof(int32_t));
  key.back() = state.accepting ? '\1' : '\0';
  return key;
}

}  // namespace

TokenTrie::TokenTrie(const Tokenizer& tokenizer) : n_vocab_(tokenizer.n_vocab()) {
  pieces_.resize(static_cast<size_t>(n_vocab_));
  std::vector<int32_t> order;
  for (int32_t id = 0; id < n_vocab_; ++id) {
    if (tokenizer.is_end_of_generation(id)) {
      end_tokens_.push_back(id);
      continue;
    }
    pieces_[static_cast<size_t>(id)] = tokenizer.token_to_piece(id);
    if (!pieces_[static_cast<size_t>(id)].empty()) order.push_back(id);
  }
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return pieces_[static_cast<size_t>(a)] < pieces_[static_cast<size_t>(b)] ||
           (pieces_[static_cast<size_t>(a)] == pieces_[static_cast<size_t>(b)] && a < b);
  });
  // Insert in sorted order: a node's children are created in byte order, and the path from the
  // root to the last inserted token is all a new token can share.
  nodes_.push_back({});
  std::vector<int32_t> path{0};  // nodes along the last inserted piece
  std::vector<int32_t> last_child(1, -1);
  std::string previous;
  for (int32_t id : order) {
    const std::string& piece = pieces_[static_cast<size_t>(id)];
    size_t common = 0;
    while (common < piece.size() && common < previous.size() && piece[common] == previous[common]) ++common;
    path.resize(common + 1);
    for (size_t i = common; i < piece.size(); ++i) {
      const int32_t parent = path.back();
      const auto child = static_cast<int32_t>(nodes_.size());
      Node node;
      node.byte = static_cast<uint8_t>(piece[i]);
      nodes_.push_back(node);
      last_child.push_back(-1);
      if (last_child[static_cast<size_t>(parent)] < 0) {
        nodes_[static_cast<size_t>(parent)].first_child = child;
      } else {
        nodes_[static_cast<size_t>(last_child[static_cast<size_t>(parent)])].next_sibling = child;
      }
      last_child[static_cast<size_t>(parent)] = child;
      path.push_back(child);
    }
    Node& end = nodes_[static_cast<size_t>(path.back())];
    if (end.tokens_begin == end.tokens_end) {
      end.tokens_begin = static_cast<int32_t>(tokens_.size());
      end.tokens_end = end.tokens_begin;
    }
    tokens_.push_back(id);
    end.tokens_end += 1;
    previous = piece;
  }
}

GrammarRuntime::GrammarRuntime(Grammar grammar, const TokenTrie* trie, int max_depth)
    : grammar_(std::move(grammar)), trie_(trie), max_depth_(max_depth) {
  if (grammar_.root() < 0) throw std::logic_error("grammar without a root rule");
  Closure closure;
  for (int32_t start : grammar_.alternatives(grammar_.root())) {
    close(start, -1, &initial_.stacks, &initial_.accepting, &closure);
  }
  if (initial_.stacks.size() > kMaxStacksPerState) initial_.stacks.resize(kMaxStacksPerState);
  std::sort(initial_.stacks.begin(), initial_.stacks.end());
  initial_.stacks.erase(std::unique(initial_.stacks.begin(), initial_.stacks.end()), initial_.stacks.end());
}

int32_t GrammarRuntime::intern(int32_t position, int32_t parent) {
  const uint64_t key = node_key(position, parent);
  if (auto it = node_ids_.find(key); it != node_ids_.end()) return it->second;
  const int32_t depth = parent < 0 ? 1 : nodes_[static_cast<size_t>(parent)].depth + 1;
  if (depth > max_depth_ || nodes_.size() >= kMaxStacks) return -1;
  const auto id = static_cast<int32_t>(nodes_.size());
  nodes_.push_back({position, parent, depth});
  successors_.emplace_back();
  node_ids_.emplace(key, id);
  stack_count_.store(nodes_.size(), std::memory_order_relaxed);
  return id;
}

void GrammarRuntime::close(int32_t position, int32_t parent, std::vector<int32_t>* out, bool* accepting,
                           Closure* closure) {
  // A work list, not recursion: a closure may run through thousands of rules (many optional
  // parts in a row) and must not depend on the thread's stack. The order of the found stacks
  // does not matter: the caller sorts them.
  std::vector<std::pair<int32_t, int32_t>>& work = closure->work;
  work.clear();
  work.emplace_back(position, parent);
  const std::vector<Element>& elements = grammar_.elements();
  while (!work.empty()) {
    if (++closure->steps > kMaxClosureSteps) return;  // what is left is dropped
    const auto [at, below] = work.back();
    work.pop_back();
    const Element& element = elements[static_cast<size_t>(at)];
    if (element.kind == Element::Kind::bytes) {
      const int32_t node = intern(at, below);
      if (node >= 0) out->push_back(node);
    } else if (element.kind == Element::Kind::end) {
      if (below < 0) {
        *accepting = true;
      } else {
        const Node returned = nodes_[static_cast<size_t>(below)];
        work.emplace_back(returned.position, returned.parent);
      }
    } else {
      // Where to continue after the rule; a rule in last place returns straight to `below`, so
      // repetition (R := item R) does not grow the stack.
      int32_t after = below;
      if (elements[static_cast<size_t>(at) + 1].kind != Element::Kind::end) {
        after = intern(at + 1, below);
        if (after < 0) continue;
      }
      // A rule expanded again over the same stack without a byte in between adds nothing (and
      // would loop for ever on rules that match the empty text).
      if (!closure->expanded.insert(node_key(element.index, after)).second) continue;
      for (int32_t start : grammar_.alternatives(element.index)) work.emplace_back(start, after);
    }
  }
}

const GrammarRuntime::Successors& GrammarRuntime::successors(int32_t node) {
  if (successors_[static_cast<size_t>(node)].computed) return successors_[static_cast<size_t>(node)];
  std::vector<int32_t> found;
  bool accepting = false;
  Closure closure;
  const Node current = nodes_[static_cast<size_t>(node)];
  close(current.position + 1, current.parent, &found, &accepting, &closure);
  std::sort(found.begin(), found.end());
  found.erase(std::unique(found.begin(), found.end()), found.end());
  if (found.size() > kMaxStacksPerState) found.resize(kMaxStacksPerState);
  Successors& entry = successors_[static_cast<size_t>(node)];  // after close(): interning may grow the vector
  entry.begin = static_cast<int32_t>(successor_pool_.size());
  entry.count = static_cast<int32_t>(found.size());
  entry.accepting = accepting;
  entry.computed = true;
  successor_pool_.insert(successor_pool_.end(), found.begin(), found.end());
  return entry;
}

void GrammarRuntime::advance(const MatchState& from, uint8_t byte, MatchState* to) {
  to->stacks.clear();
  to->accepting = false;
  int sources = 0;
  for (int32_t node : from.stacks) {
    const Element& top = grammar_.elements()[static_cast<size_t>(nodes_[static_cast<size_t>(node)].position)];
    if (!grammar_.byte_sets()[static_cast<size_t>(top.index)].has(byte)) continue;
    const Successors next = successors(node);
    to->stacks.insert(to->stacks.end(), successor_pool_.begin() + next.begin,
                      successor_pool_.begin() + next.begin + next.count);
    to->accepting = to->accepting || next.accepting;
    sources += 1;
  }
  if (sources > 1) {
    std::sort(to->stacks.begin(), to->stacks.end());
    to->stacks.erase(std::unique(to->stacks.begin(), to->stacks.end()), to->stacks.end());
    if (to->stacks.size() > kMaxStacksPerState) to->stacks.resize(kMaxStacksPerState);
  }
}

void GrammarRuntime::walk(int32_t trie_node, const MatchState& state, size_t depth, TokenMask* mask) {
  if (walk_states_.size() <= depth) walk_states_.resize(depth + 1);
  const auto& nodes = trie_->nodes();
  const auto& tokens = trie_->tokens();
  for (int32_t child = nodes[static_cast<size_t>(trie_node)].first_child; child >= 0;
       child = nodes[static_cast<size_t>(child)].next_sibling) {
    const TokenTrie::Node& next_node = nodes[static_cast<size_t>(child)];
    // walk_states_ may grow below, so it is indexed afresh after each recursive call.
    advance(state, next_node.byte, &walk_states_[depth]);
    if (walk_states_[depth].dead()) continue;
    for (int32_t i = next_node.tokens_begin; i < next_node.tokens_end; ++i) {
      const int32_t token = tokens[static_cast<size_t>(i)];
      (*mask)[static_cast<size_t>(token) >> 6] |= uint64_t{1} << (token & 63);
    }
    if (next_node.first_child < 0 || walk_states_[depth].stacks.empty()) continue;
    MatchState here = std::move(walk_states_[depth]);
    walk(child, here, depth + 1, mask);
    walk_states_[depth] = std::move(here);
  }
}

std::shared_ptr<const TokenMask> GrammarRuntime::allowed_tokens(const MatchState& state) {
  std::string key = state_key(state);
  if (auto it = masks_.find(key); it != masks_.end()) return it->second;
  auto mask = std::make_shared<TokenMask>((static_cast<size_t>(trie_->n_vocab()) + 63) / 64, 0);
  if (!state.stacks.empty()) walk(0, state, 0, mask.get());
  if (state.accepting) {
    for (int32_t token : trie_->end_tokens()) (*mask)[static_cast<size_t>(token) >> 6] |= uint64_t{1} << (token & 63);
  }
  if (masks_.size() * mask->size() * sizeof(uint64_t) >= kMaskCacheBytes) {
    // Full: every other entry goes, so the states in use now are not all recomputed at once.
    bool drop = true;
    for (auto it = masks_.begin(); it != masks_.end(); drop = !drop) it = drop ? masks_.erase(it) : std::next(it);
  }
  masks_.emplace(std::move(key), mask);
  return mask;
}

Matcher::Matcher(std::shared_ptr<GrammarRuntime> runtime) : runtime_(std::move(runtime)), state_(runtime_->initial()) {}

bool Matcher::accept(int32_t token) {
  const std::string& piece = runtime_->trie().piece(token);
  if (piece.empty()) return false;
  MatchState current = state_;
  for (char c : piece) {
    runtime_->advance(current, static_cast<uint8_t>(c), &scratch_);
    if (scratch_.dead()) return false;
    std::swap(current, scratch_);
  }
  state_ = std::move(current);
  return true;
}

bool apply_mask(const TokenMask& mask, std::span<float> logits) {
  uint64_t any = 0;
  const size_t n = logits.size();
  float* data = logits.data();
  for (size_t word = 0; word * 64 < n; ++word) {
    const uint64_t bits = mask[word];
    any |= bits;
    if (bits == ~uint64_t{0}) continue;
    const size_t begin = word * 64;
    const size_t end = std::min(n, begin + 64);
    if (bits == 0) {
      // Most words of a structural state allow nothing: a plain fill the compiler vectorises.
      std::fill(data + begin, data + end, -INFINITY);
      continue;
    }
    for (size_t i = begin; i < end; ++i) {
      data[i] = ((bits >> (i - begin)) & 1) ? data[i] : -INFINITY;
    }
  }
  return any != 0;
}

}  // namespace darkbloom::engine::grammar
