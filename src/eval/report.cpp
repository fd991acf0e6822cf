#include "eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "kv/kv_cache.h"
#include "plot/plot.h"
#include "util/error.h"

namespace podkv::eval {

namespace {

namespace fs = std::filesystem;

// "1,048,576"
std::string with_commas(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

std::string printf_string(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

// "512", "1K", "32K" for axis ticks and column names.
std::string length_name(int64_t n) { return n >= 1024 && n % 1024 == 0 ? std::to_string(n / 1024) + "K" : std::to_string(n); }

std::string depth_name(double d) { return printf_string(d == std::floor(d) ? "%.0f%%" : "%.1f%%", d); }

nlohmann::json item_json(const TaskItem& item, bool grid) {
  nlohmann::json j = {{"index", item.index}, {"length", item.length}, {"sample", item.sample},
                      {"prompt_tokens", item.tokens.size()}};
  if (grid) {
    j["depth"] = item.depth;
    j["answer"] = item.answer;
    j["needle_position"] = item.needle_position;
    j["needle_tokens"] = item.needle_tokens;
  } else {
    j["source"] = item.source;
  }
  return j;
}

}  // namespace

int64_t dense_cache_bytes(const ModelConfig& c, int64_t length) {
  KvCache probe(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), 0, 16);
  return probe.held_pages(length) * static_cast<int64_t>(probe.page_bytes());
}

nlohmann::json build_results(const ReportInput& in) {
  const TaskSettings& s = in.settings;
  const ModelConfig& c = in.config;
  const bool grid = is_grid_task(s.task);
  const std::vector<TaskItem>& items = *in.items;
  nlohmann::json out;
  out["task"] = s.task;
  out["model"] = {{"path", in.model_path},
                  {"architecture", c.architecture},
                  {"layers", c.num_layers},
                  {"heads", c.num_heads},
                  {"kv_heads", c.num_kv_heads},
                  {"head_dim", c.head_dim},
                  {"vocab_size", c.vocab_size},
                  {"max_position_embeddings", c.max_position_embeddings},
                  {"parameters", c.parameter_count()}};
  out["settings"] = to_json(s);
  out["settings"]["chunk"] = in.run.chunk;
  if (grid) {
    out["scored"] = "exact match of the greedy answer (first " +
                    std::string(s.max_new_tokens > 0 ? std::to_string(s.max_new_tokens) : "answer + 4") +
                    " tokens) after the prompt run as one prefill call; accuracy[depth][length]";
  } else {
    const int64_t p = s.effective_prefill();
    out["scored"] = "each window: tokens 0.." + std::to_string(p - 1) + " in one prefill call, then calls of " +
                    std::to_string(s.decode_chunk) + " token(s); scored: the predictions of tokens " + std::to_string(p) +
                    ".." + std::to_string(s.context - 1) + " (logits of positions " + std::to_string(p - 1) + ".." +
                    std::to_string(s.context - 2) + ")" + (s.task == "agreement" ? ", against a dense cache run the same way" : "");
  }
  if (!s.bos) out["scored"] = out["scored"].get<std::string>() + "; no BOS before the " + (grid ? "prompts" : "windows");
  out["kv_bytes_note"] =
      "kv_bytes: bytes of the pages the cache held for the sequence at kv_length tokens (entries of the policy's "
      "options.dtype, float32 when it has none; 16-token pages; grid tasks: after the prefill of the longest prompt); "
      "kv_bytes_in_use: the layout's analytic count; dense_kv_bytes: what a dense cache of float32 entries holds at "
      "the same length";

  // Records of each policy (matching label and options), by item.
  out["policies"] = nlohmann::json::array();
  for (const EvalPolicy& p : *in.policies) {
    const std::string options = p.options.dump();
    std::vector<const ItemRecord*> mine;
    for (const ItemRecord& r : *in.records)
      if (r.policy == p.label && r.options == options && r.item >= 0 && r.item < static_cast<int>(items.size())) mine.push_back(&r);
    nlohmann::json pj = {{"label", p.label}, {"policy", p.layout.policy}, {"options", p.options}, {"items", mine.size()}};
    double seconds = 0;
    const ItemRecord* kv = nullptr;  // the record of the longest evaluated length
    for (const ItemRecord* r : mine) {
      seconds += r->seconds;
      if (kv == nullptr || r->kv_length > kv->kv_length) kv = r;
    }
    pj["seconds"] = seconds;
    if (kv != nullptr) {
      const int64_t dense = dense_cache_bytes(c, kv->kv_length);
      pj["kv_length"] = kv->kv_length;
      pj["kv_bytes"] = kv->kv_bytes;
      pj["kv_bytes_in_use"] = kv->kv_bytes_in_use;
      pj["dense_kv_bytes"] = dense;
      pj["kv_saving"] = dense > 0 ? 1.0 - static_cast<double>(kv->kv_bytes) / static_cast<double>(dense) : 0.0;
    }
    if (!grid) {
      WindowScore sum;
      for (const ItemRecord* r : mine) {
        sum.scored += r->score.scored;
        sum.nll_sum += r->score.nll_sum;
        sum.top1_agree += r->score.top1_agree;
        sum.kl_sum += r->score.kl_sum;
      }
      pj["scored_positions"] = sum.scored;
      if (sum.scored > 0) {
        pj["nll"] = sum.nll_sum / sum.scored;
        pj["perplexity"] = std::exp(sum.nll_sum / sum.scored);
        if (s.task == "agreement") {
          pj["top1_agreement"] = static_cast<double>(sum.top1_agree) / sum.scored;
          pj["kl"] = sum.kl_sum / sum.scored;
        }
      }
    } else {
      // accuracy[depth][length]; null where no prompt of that cell is done yet.
      const size_t rows = s.depths.size(), cols = s.lengths.size();
      std::vector<std::vector<int>> correct(rows, std::vector<int>(cols, 0)), count(rows, std::vector<int>(cols, 0));
      std::vector<int64_t> kv_by_length(cols, 0);
      int total = 0, right = 0;
      for (const ItemRecord* r : mine) {
        const TaskItem& item = items[r->item];
        ++count[item.depth_index][item.length_index];
        correct[item.depth_index][item.length_index] += r->correct ? 1 : 0;
        kv_by_length[item.length_index] = std::max(kv_by_length[item.length_index], r->kv_bytes);
        ++total;
        right += r->correct ? 1 : 0;
      }
      nlohmann::json acc = nlohmann::json::array();
      for (size_t d = 0; d < rows; ++d) {
        nlohmann::json row = nlohmann::json::array();
        for (size_t l = 0; l < cols; ++l)
          row.push_back(count[d][l] > 0 ? nlohmann::json(static_cast<double>(correct[d][l]) / count[d][l]) : nlohmann::json());
        acc.push_back(row);
      }
      nlohmann::json by_length = nlohmann::json::array();
      for (size_t l = 0; l < cols; ++l) {
        int n = 0, k = 0;
        for (size_t d = 0; d < rows; ++d) n += count[d][l], k += correct[d][l];
        by_length.push_back(n > 0 ? nlohmann::json(static_cast<double>(k) / n) : nlohmann::json());
      }
      pj["accuracy"] = total > 0 ? nlohmann::json(static_cast<double>(right) / total) : nlohmann::json();
      pj["grid"] = {{"lengths", s.lengths}, {"depths", s.depths}, {"accuracy", acc},
                    {"accuracy_by_length", by_length}, {"kv_bytes_by_length", kv_by_length}};
    }
    out["policies"].push_back(pj);
  }
  out["items"] = nlohmann::json::array();
  for (const TaskItem& item : items) out["items"].push_back(item_json(item, grid));
  out["records"] = nlohmann::json::array();
  for (const ItemRecord& r : *in.records) out["records"].push_back(to_json(r));
  return out;
}

std::string markdown_table(const nlohmann::json& results) {
  const std::string task = results.at("task");
  const bool grid = is_grid_task(task);
  const nlohmann::json& m = results.at("model");
  const nlohmann::json& s = results.at("settings");
  std::string md = "# podkv eval: " + task + "\n\n";
  md += "Model `" + m.at("path").get<std::string>() + "`: " + std::to_string(m.at("layers").get<int>()) + " layers, " +
        std::to_string(m.at("kv_heads").get<int>()) + " KV heads, head_dim " + std::to_string(m.at("head_dim").get<int>()) +
        ", context " + std::to_string(m.at("max_position_embeddings").get<int64_t>()) + ".\n";
  if (!s.at("data").empty()) {
    md += "Data:";
    for (const auto& f : s.at("data")) md += " `" + f.get<std::string>() + "`";
    md += ".\n";
  }
  md += "Scored: " + results.at("scored").get<std::string>() + ".\n";
  if (grid)
    md += std::to_string(s.at("samples").get<int>()) + " prompt(s) per (length, depth) cell, seed " +
          std::to_string(s.at("seed").get<uint64_t>()) + ".\n";
  bool other_dtype = false;  // a policy with its own entry type (dtype= or --kv-dtype)
  for (const auto& p : results.at("policies")) other_dtype = other_dtype || p.at("options").contains("dtype");
  md += other_dtype ? "KV bytes: pages the cache held at the evaluated length, in each method's entry type (float32 "
                      "unless its dtype says otherwise); saving = 1 - bytes / the bytes of a dense cache of float32 "
                      "entries.\n\n"
                    : "KV bytes: pages the cache held (float32 entries) at the evaluated length; saving = 1 - bytes / "
                      "dense bytes.\n\n";

  const nlohmann::json& policies = results.at("policies");
  int64_t length = 0;
  for (const auto& p : policies) length = std::max(length, p.value("kv_length", int64_t{0}));
  md += "| method | KV bytes @ " + std::to_string(length) + " tokens | saving vs dense |";
  std::vector<int64_t> lengths;
  if (grid) {
    md += " accuracy |";
    lengths = s.at("lengths").get<std::vector<int64_t>>();
    for (int64_t l : lengths) md += " acc @ " + length_name(l) + " |";
  } else if (task == "agreement") {
    md += " top-1 agreement | KL (nats/token) | perplexity |";
  } else {
    md += " perplexity | NLL (nats/token) |";
  }
  md += " time (s) |\n|---|---:|---:|";
  const size_t metric_columns = grid ? 1 + lengths.size() : (task == "agreement" ? 3 : 2);
  for (size_t i = 0; i < metric_columns; ++i) md += "---:|";
  md += "---:|\n";
  auto number = [](const nlohmann::json& p, const char* key, const char* format, double scale = 1) {
    const auto it = p.find(key);
    return it == p.end() || it->is_null() ? std::string("–") : printf_string(format, it->get<double>() * scale);
  };
  for (const auto& p : policies) {
    md += "| " + p.at("label").get<std::string>() + " | ";
    if (p.contains("kv_bytes")) {
      const int64_t b = p.at("kv_bytes").get<int64_t>();
      md += with_commas(b) + " (" + human_bytes(static_cast<double>(b)) + ") | " +
            number(p, "kv_saving", "%.1f%%", 100) + " |";
    } else {
      md += "– | – |";
    }
    if (grid) {
      md += " " + number(p, "accuracy", "%.1f%%", 100) + " |";
      const auto& by_length = p.at("grid").at("accuracy_by_length");
      for (const auto& a : by_length) md += " " + (a.is_null() ? std::string("–") : printf_string("%.0f%%", a.get<double>() * 100)) + " |";
    } else if (task == "agreement") {
      md += " " + number(p, "top1_agreement", "%.2f%%", 100) + " | " + number(p, "kl", "%.4g") + " | " +
            number(p, "perplexity", "%.2f") + " |";
    } else {
      md += " " + number(p, "perplexity", "%.2f") + " | " + number(p, "nll", "%.4f") + " |";
    }
    md += " " + number(p, "seconds", "%.1f") + " |\n";
  }
  return md;
}

std::vector<std::string> write_report(const std::string& dir, const nlohmann::json& results) {
  std::vector<std::string> written;
  auto write = [&](const std::string& name, const std::string& text) {
    const fs::path path = fs::path(dir) / name, tmp = fs::path(dir) / (name + ".tmp");
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << text;
      if (!out.good()) throw Error(tmp.string() + ": cannot write");
    }
    fs::rename(tmp, path);
    written.push_back(path.string());
  };
  write("results.json", results.dump(1) + "\n");
  write("table.md", markdown_table(results));
  const std::string task = results.at("task");
  if (!is_grid_task(task) || !plot::png_available()) return written;

  const nlohmann::json& s = results.at("settings");
  std::vector<plot::Heatmap> panels;
  for (const auto& p : results.at("policies")) {
    plot::Heatmap h;
    const auto& g = p.at("grid");
    h.title = p.at("label").get<std::string>();
    if (!p.at("accuracy").is_null()) h.title += printf_string(" (%.0f%%)", p.at("accuracy").get<double>() * 100);
    h.x_label = "context length (tokens)";
    h.y_label = task == "kv-retrieval" ? "asked pair depth" : "needle depth";
    for (const auto& l : g.at("lengths")) h.x_ticks.push_back(length_name(l.get<int64_t>()));
    for (const auto& d : g.at("depths")) h.y_ticks.push_back(depth_name(d.get<double>()));
    for (const auto& row : g.at("accuracy")) {
      std::vector<double> values;
      for (const auto& v : row) values.push_back(v.is_null() ? NAN : v.get<double>());
      h.values.push_back(values);
    }
    h.annotate = true;
    panels.push_back(std::move(h));
  }
  fs::path model_path = fs::path(results.at("model").at("path").get<std::string>()).lexically_normal();
  if (model_path.filename().empty()) model_path = model_path.parent_path();
  const std::string model = model_path.filename().string();
  const std::string title = task + " accuracy: " + model + ", " + std::to_string(s.at("samples").get<int>()) +
                            " prompt(s) per cell (0% depth = start of the haystack)";
  const int columns = static_cast<int>(std::min<size_t>(panels.size(), 4));
  const fs::path png = fs::path(dir) / (task + "_heatmap.png");
  plot::write_heatmaps_png(png.string(), panels, title, columns);
  written.push_back(png.string());
  return written;
}

}  // namespace podkv::eval
