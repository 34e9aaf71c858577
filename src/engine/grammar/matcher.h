// Runs a grammar over generated text and turns where it stands into the set of tokens that may
// come next.
//
// A state is a set of stacks (the grammar may be ambiguous for a while, as in anyOf). A stack is
// a position in the grammar and the stack to return to when that position's rule ends. Stacks
// are interned in an arena, so equal stacks are one id, a state is a short sorted list of ids,
// and what follows a stack is computed once and remembered: every byte its top accepts leads to
// the same successor stacks.
//
// Token masks come from a walk of the vocabulary's trie (tokens sharing a beginning share the
// walk) and are cached per state, so a state seen before costs a lookup. The runtime is not
// thread-safe: one thread (the scheduler's) uses it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/grammar/grammar.h"
#include "engine/tokenizer/tokenizer.h"

namespace darkbloom::engine::grammar {

// The vocabulary as a trie of output bytes, built once per model. Control tokens spell nothing;
// end-of-generation tokens are kept apart (allowed exactly when the grammar may end).
class TokenTrie {
 public:
  explicit TokenTrie(const Tokenizer& tokenizer);

  int32_t n_vocab() const { return n_vocab_; }
  const std::vector<int32_t>& end_tokens() const { return end_tokens_; }
  const std::string& piece(int32_t token) const { return pieces_[static_cast<size_t>(token)]; }

  struct Node {
    uint8_t byte = 0;
    int32_t first_child = -1;
    int32_t next_sibling = -1;
    int32_t tokens_begin = 0;  // tokens whose bytes end here: tokens_[begin, end)
    int32_t tokens_end = 0;
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }

 private:
  int32_t n_vocab_ = 0;
  std::vector<std::string> pieces_;
  std::vector<int32_t> end_tokens_;
  std::vector<Node> nodes_;
  std::atomic<size_t> stack_count_{0};  // nodes_[0] is the root (no byte)
  std::vector<int32_t> tokens_;
};

// One bit per token id.
using TokenMask = std::vector<uint64_t>;
inline bool mask_allows(const TokenMask& mask, int32_t token) {
  return (mask[static_cast<size_t>(token) >> 6] >> (token & 63)) & 1;
}

// Sets the logits of tokens the mask does not allow to -infinity; false when it allows none.
bool apply_mask(const TokenMask& mask, std::span<float> logits);

struct MatchState {
  std::vector<int32_t> stacks;  // sorted interned stack ids; each top is a byte set
  bool accepting = false;       // the text so far is a complete match
  bool dead() const { return stacks.empty() && !accepting; }
};

// A grammar bound to a vocabulary, with its arena and caches. Shared by every request that uses
// the same grammar on the same model.
class GrammarRuntime {
 public:
  // `max_depth` bounds how deeply rules may nest (recursive schemas): deeper text is not allowed.
  // Without a trie the runtime matches bytes only (allowed_tokens and Matcher need one).
  GrammarRuntime(Grammar grammar, const TokenTrie* trie, int max_depth = 96);

  MatchState initial() const { return initial_; }
  // The state after one more byte; dead when the byte is not allowed.
  void advance(const MatchState& from, uint8_t byte, MatchState* to);
  // The tokens allowed after `state`: the cached mask or a fresh walk of the trie.
  std::shared_ptr<const TokenMask> allowed_tokens(const MatchState& state);

  const Grammar& grammar() const { return grammar_; }
  const TokenTrie& trie() const { return *trie_; }
  size_t cached_masks() const { return masks_.size(); }
  // Interned stacks so far; any thread may ask (the engine stops sharing a runtime that grew large).
  size_t stack_count() const { return stack_count_.load(std::memory_order_relaxed); }

 private:
  struct Node {
    int32_t position;  // an element of the grammar
    int32_t parent;    // where to go after this position's rule ends; -1 = the end of the text
    int32_t depth;
  };
  struct Successors {
    int32_t begin = 0;
    int32_t count = 0;
    bool accepting = false;
    bool computed = false;
  };

  struct Closure {
    std::unordered_set<uint64_t> expanded;  // (rule, stack) pairs expanded already
    size_t steps = 0;
    std::vector<std::pair<int32_t, int32_t>> work;  // (position, stack below) still to follow
  };
  int32_t intern(int32_t position, int32_t parent);  // -1 when too deep
  // The stacks reached from `position` (with `parent` below it) whose tops are byte sets.
  void close(int32_t position, int32_t parent, std::vector<int32_t>* out, bool* accepting, Closure* closure);
  const Successors& successors(int32_t node);
  void walk(int32_t trie_node, const MatchState& state, size_t depth, TokenMask* mask);

  Grammar grammar_;
  const TokenTrie* trie_;
  int max_depth_;
  std::vector<Node> nodes_;
  std::atomic<size_t> stack_count_{0};
  std::unordered_map<uint64_t, int32_t> node_ids_;
  std::vector<Successors> successors_;
  std::vector<int32_t> successor_pool_;
  MatchState initial_;
  std::vector<MatchState> walk_states_;  // one per trie depth, reused
  std::unordered_map<std::string, std::shared_ptr<const TokenMask>> masks_;
};

// Where one request stands in its grammar.
class Matcher {
 public:
  explicit Matcher(std::shared_ptr<GrammarRuntime> runtime);

  std::shared_ptr<const TokenMask> allowed_tokens() { return runtime_->allowed_tokens(state_); }
  // Feeds a sampled token's bytes; false when the grammar does not allow them (the state is
  // then unchanged).
  bool accept(int32_t token);
  // The text so far is complete: an end-of-generation token may come.
  bool accepting() const { return state_.accepting; }
  // Nothing but the end may come.
  bool finished() const { return state_.stacks.empty(); }

 private:
  std::shared_ptr<GrammarRuntime> runtime_;
  MatchState state_;
  MatchState scratch_;
};

}  // namespace darkbloom::engine::grammar
