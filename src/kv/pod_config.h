// The PoD layer grouping and proximal window of a model: the contents of
// pod.json (format in docs/pod-method.md), its validation against the model,
// and PodLayout, the precomputed per-(layer, KV head) lookup the attention code
// uses on every step.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace podkv {

struct PodConfig {
  int sink_tokens = 0;    // ns: keys j < ns are proximal for every query
  int recent_tokens = 1;  // nr: keys t - nr < j <= t are proximal (includes the query itself)
  // [kv_head] -> anchor layers of that head's blocks: strictly increasing,
  // starting at 0; a block runs from its anchor up to the layer before the
  // next anchor (the last block up to the top layer).
  std::vector<std::vector<int>> anchors;
  std::optional<float> tau;   // skip distant attention when the gate >= tau; absent = never skip
  bool share_values = false;  // experimental: share distant values too (off by default)
  // Fields this reader does not know (e.g. the settings of the analysis that
  // produced the file): kept so that a load + save round trip preserves them.
  nlohmann::json extra = nlohmann::json::object();
};

// Checks `cfg` against a model of `num_layers` layers and `num_kv_heads` KV
// heads. Throws Error("<source_name>: <field>: ...") on the first problem.
void validate_pod_config(const PodConfig& cfg, const std::string& source_name, int num_layers,
                         int num_kv_heads);

// Builds a PodConfig from parsed JSON and validates it (see validate_pod_config).
// Required: sink_tokens, recent_tokens, anchors. Optional: tau (null/absent =
// never skip), share_values (absent = false). Unknown fields go to `extra`.
PodConfig parse_pod_config(const nlohmann::json& j, const std::string& source_name, int num_layers,
                           int num_kv_heads);

// Reads and validates the pod.json at `path`; errors name `path`.
PodConfig load_pod_config(const std::string& path, int num_layers, int num_kv_heads);

// The JSON object of `cfg` (tau null when absent), `extra` fields merged in.
nlohmann::json to_json(const PodConfig& cfg);

// Writes `cfg` to `path` (one anchor list per line) through `path`.tmp and a
// rename, so a reader never sees a half-written file. The config is checked
// first (everything but the model's layer count, which is not known here).
void save_pod_config(const std::string& path, const PodConfig& cfg);

// Every head gets the same blocks of `group_size` consecutive layers: anchors
// 0, G, 2G, ...; the last block is shorter when G does not divide num_layers.
// group_size 1 is dense attention.
PodConfig uniform_pod_config(int num_layers, int num_kv_heads, int group_size, int sink_tokens,
                             int recent_tokens);

// The anchor layer of `layer` for `kv_head` (binary search over that head's
// anchors). Use PodLayout in hot loops. Throws Error when kv_head or layer is
// negative or kv_head has no anchor list.
int anchor_of(const PodConfig& cfg, int layer, int kv_head);

// True when every block is one layer (the config is plain dense attention).
bool is_dense(const PodConfig& cfg, int num_layers);

// Validated, table-driven view of a PodConfig for one model.
class PodLayout {
 public:
  // Validates `cfg` against the model (source name "pod config" in errors).
  PodLayout(const PodConfig& cfg, int num_layers, int num_kv_heads);

  int num_layers() const { return num_layers_; }
  int num_kv_heads() const { return num_kv_heads_; }

  int anchor(int layer, int kv_head) const { return anchor_[index(layer, kv_head)]; }
  bool is_anchor(int layer, int kv_head) const { return anchor(layer, kv_head) == layer; }
  // Index of the block holding `layer` for `kv_head`, in 0..num_blocks(kv_head)-1.
  int block_of(int layer, int kv_head) const { return block_[index(layer, kv_head)]; }
  int num_blocks(int kv_head) const { return static_cast<int>(anchors(kv_head).size()); }
  // Anchor layers of `kv_head`, increasing from 0.
  const std::vector<int>& anchors(int kv_head) const;
  // Sum over heads of num_blocks: how many distant key sets per token PoD keeps.
  int total_blocks() const { return total_blocks_; }
  // G = L * H_kv / total_blocks; the distant-token saving is (1 - 1/G) / 2.
  double average_block_length() const;
  bool is_dense() const { return total_blocks_ == num_layers_ * num_kv_heads_; }

 private:
  size_t index(int layer, int kv_head) const;

  int num_layers_ = 0;
  int num_kv_heads_ = 0;
  int total_blocks_ = 0;
  std::vector<std::vector<int>> anchors_;  // [kv_head] -> anchor layers
  std::vector<int> anchor_;                // [kv_head * num_layers + layer] -> anchor layer
  std::vector<int> block_;                 // [kv_head * num_layers + layer] -> block index
};

}  // namespace podkv
