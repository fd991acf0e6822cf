#include "plot/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <limits>
#include <numbers>
#include <string>

#include "util/error.h"
#include "util/mapped_file.h"

#ifdef PODKV_HAVE_CAIRO
#include <cairo.h>
#endif

namespace podkv::plot {

namespace {

// matplotlib's viridis at 0, 1/9, ..., 1; interpolated linearly in between.
constexpr std::array<std::array<uint8_t, 3>, 10> kViridis = {{
    {0x44, 0x01, 0x54},
    {0x48, 0x28, 0x78},
    {0x3e, 0x49, 0x89},
    {0x31, 0x68, 0x8e},
    {0x26, 0x82, 0x8e},
    {0x1f, 0x9e, 0x89},
    {0x35, 0xb7, 0x79},
    {0x6e, 0xce, 0x58},
    {0xb5, 0xde, 0x2b},
    {0xfd, 0xe7, 0x25},
}};

// Checks the heatmap inputs; `path` names the output in the message.
void validate_heatmaps(const std::string& path, const std::vector<Heatmap>& panels, int columns) {
  check(!panels.empty(), path + ": no heatmap panels to draw");
  check(columns >= 0, path + ": columns must be >= 0 (got " + std::to_string(columns) + ")");
  for (size_t p = 0; p < panels.size(); ++p) {
    const Heatmap& h = panels[p];
    const std::string where = path + ": heatmap panel " + std::to_string(p);
    check(!h.values.empty() && !h.values[0].empty(), where + " has no values");
    for (size_t r = 0; r < h.values.size(); ++r)
      check(h.values[r].size() == h.values[0].size(),
            where + ": row " + std::to_string(r) + " has " + std::to_string(h.values[r].size()) +
                " values, row 0 has " + std::to_string(h.values[0].size()));
    check(std::isfinite(h.vmin) && std::isfinite(h.vmax) && h.vmax >= h.vmin,
          where + ": colour range vmin " + std::to_string(h.vmin) + " .. vmax " +
              std::to_string(h.vmax) + " is not a finite increasing range");
  }
}

void validate_line_chart(const std::string& path, const LineChart& chart) {
  bool any_point = false;
  for (const Series& s : chart.series) {
    check(s.x.size() == s.y.size(), path + ": series '" + s.name + "' has " +
                                        std::to_string(s.x.size()) + " x values but " +
                                        std::to_string(s.y.size()) + " y values");
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i]) && (!chart.log_y || s.y[i] > 0))
        any_point = true;
  }
  check(any_point, path + ": the line chart has no drawable point");
}

}  // namespace

std::array<uint8_t, 3> colormap_rgb(double t) {
  if (!(t > 0.0)) t = 0.0;  // also NaN
  if (t > 1.0) t = 1.0;
  const double position = t * (kViridis.size() - 1);
  const size_t i = std::min(static_cast<size_t>(position), kViridis.size() - 2);
  const double f = position - static_cast<double>(i);
  std::array<uint8_t, 3> rgb{};
  for (int c = 0; c < 3; ++c)
    rgb[c] = static_cast<uint8_t>(
        std::lround((1.0 - f) * kViridis[i][c] + f * kViridis[i + 1][c]));
  return rgb;
}

#ifndef PODKV_HAVE_CAIRO

bool png_available() { return false; }

namespace {
[[noreturn]] void throw_no_cairo(const std::string& path) {
  throw Error(path + ": PNG output needs Cairo: this podkv was built without it (install libcairo2-dev)");
}
}  // namespace

void write_heatmaps_png(const std::string& path, const std::vector<Heatmap>& panels,
                        const std::string&, int columns, bool) {
  validate_heatmaps(path, panels, columns);
  throw_no_cairo(path);
}

void write_line_chart_png(const std::string& path, const LineChart& chart) {
  validate_line_chart(path, chart);
  throw_no_cairo(path);
}

HeatmapGeometry heatmap_geometry(const std::vector<Heatmap>&, const std::string&, int) {
  throw_no_cairo("heatmap_geometry");
}

#else  // PODKV_HAVE_CAIRO

bool png_available() { return true; }

namespace {

// Font sizes in pixels.
constexpr double kTitleFont = 18, kPanelTitleFont = 14, kAxisFont = 13, kTickFont = 11,
                 kCellFont = 10;
constexpr double kMargin = 16;

// An ARGB image surface and its drawing context, released together.
class Canvas {
 public:
  Canvas(int width, int height)
      : surface_(cairo_image_surface_create(CAIRO_FORMAT_ARGB32, std::max(width, 1),
                                            std::max(height, 1))),
        cr_(cairo_create(surface_)) {
    check(cairo_surface_status(surface_) == CAIRO_STATUS_SUCCESS,
          "cannot create a " + std::to_string(width) + "x" + std::to_string(height) + " image");
    cairo_set_source_rgb(cr_, 1, 1, 1);
    cairo_paint(cr_);
  }
  ~Canvas() {
    cairo_destroy(cr_);
    cairo_surface_destroy(surface_);
  }
  Canvas(const Canvas&) = delete;
  Canvas& operator=(const Canvas&) = delete;
  cairo_t* cr() const { return cr_; }
  cairo_surface_t* surface() const { return surface_; }

 private:
  cairo_surface_t* surface_;
  cairo_t* cr_;
};

void set_font(cairo_t* cr, double size, bool bold = false) {
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

double text_width(cairo_t* cr, const std::string& text) {
  cairo_text_extents_t extents;
  cairo_text_extents(cr, text.c_str(), &extents);
  return extents.x_advance;
}

enum class HAlign { Left, Center, Right };

// Draws one line of text with its horizontal anchor at x and its vertical
// middle (between ascent and descent) at y_middle, in the current font.
void draw_text(cairo_t* cr, const std::string& text, double x, double y_middle, HAlign align) {
  if (text.empty()) return;
  cairo_font_extents_t font;
  cairo_font_extents(cr, &font);
  const double width = text_width(cr, text);
  const double left = align == HAlign::Left ? x : align == HAlign::Center ? x - width / 2 : x - width;
  cairo_move_to(cr, left, y_middle + (font.ascent - font.descent) / 2);
  cairo_show_text(cr, text.c_str());
}

// Text turned 90 degrees counter-clockwise, centred on (x, y): a y axis title.
void draw_vertical_text(cairo_t* cr, const std::string& text, double x, double y) {
  if (text.empty()) return;
  cairo_save(cr);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, -std::numbers::pi / 2);
  draw_text(cr, text, 0, 0, HAlign::Center);
  cairo_restore(cr);
}

void set_gray(cairo_t* cr, double level) { cairo_set_source_rgb(cr, level, level, level); }

void set_colormap(cairo_t* cr, double t) {
  const std::array<uint8_t, 3> rgb = colormap_rgb(t);
  cairo_set_source_rgb(cr, rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0);
}

// Axis ticks at 1, 2 or 5 times a power of ten, about `target` of them, over [lo, hi].
double nice_step(double range, int target) {
  const double raw = range / std::max(target, 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double fraction = raw / magnitude;
  const double nice = fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10;
  return nice * magnitude;
}

std::vector<double> ticks_within(double lo, double hi, double step) {
  std::vector<double> ticks;
  const double first = std::ceil(lo / step - 1e-9) * step;
  for (double v = first; v <= hi + step * 1e-9; v += step)
    ticks.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return ticks;
}

// Label of a tick value with as many decimals as the step needs.
std::string tick_label(double value, double step) {
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  char text[64];
  if (std::abs(value) >= 1e6 || (value != 0 && std::abs(value) < 1e-4))
    std::snprintf(text, sizeof(text), "%.3g", value);
  else
    std::snprintf(text, sizeof(text), "%.*f", decimals, value);
  return text;
}

// Encodes the surface as PNG into PATH.tmp and renames it to PATH.
void write_png(cairo_surface_t* surface, const std::string& path) {
  OutputFile out(path);
  struct Sink {
    OutputFile* out;
    std::string error;
  } sink{&out, {}};
  const cairo_status_t status = cairo_surface_write_to_png_stream(
      surface,
      [](void* closure, const unsigned char* data, unsigned int length) -> cairo_status_t {
        auto* s = static_cast<Sink*>(closure);
        try {
          s->out->write(data, length);
        } catch (const std::exception& e) {
          s->error = e.what();
          return CAIRO_STATUS_WRITE_ERROR;
        }
        return CAIRO_STATUS_SUCCESS;
      },
      &sink);
  if (!sink.error.empty()) throw Error(sink.error);
  check(status == CAIRO_STATUS_SUCCESS,
        path + ": cannot encode PNG: " + cairo_status_to_string(status));
  out.commit();
}

// ---------------------------------------------------------------- heatmaps

// Where everything of a heatmap figure goes (pixels).
struct HeatLayout {
  HeatmapGeometry geometry;
  double cell = 0;                 // square cells, integral
  int grid_columns = 1;            // panels per row
  double title_height = 0;         // overall title band
  double panel_title_height = 0;   // above each panel's cells
  double y_tick_width = 0;         // tick labels left of the cells
  double y_title_width = 0;        // the rotated y axis title
  double x_tick_height = 0;        // tick labels below the cells
  double x_title_height = 0;       // x axis title
  double bar_left = 0, bar_top = 0, bar_height = 0;
  static constexpr double kBarWidth = 18;
  std::vector<double> bar_ticks;
  double bar_step = 1;
};

HeatLayout layout_heatmaps(cairo_t* cr, const std::vector<Heatmap>& panels,
                           const std::string& title, int columns) {
  HeatLayout L;
  size_t max_rows = 0, max_cols = 0;
  bool any_panel_title = false, any_x_label = false, any_y_label = false, annotate = false;
  double y_tick_text = 0;
  set_font(cr, kTickFont);
  for (const Heatmap& h : panels) {
    max_rows = std::max(max_rows, h.values.size());
    max_cols = std::max(max_cols, h.values[0].size());
    any_panel_title |= !h.title.empty();
    any_x_label |= !h.x_label.empty();
    any_y_label |= !h.y_label.empty();
    annotate |= h.annotate;
    for (const std::string& t : h.y_ticks) y_tick_text = std::max(y_tick_text, text_width(cr, t));
  }
  // Cells big enough to see, the whole panel about 360 px on its long side.
  double cell = std::clamp(std::floor(360.0 / std::max(max_rows, max_cols)), 6.0, 56.0);
  if (annotate) {
    set_font(cr, kCellFont);
    cell = std::max(cell, std::ceil(text_width(cr, "-0.00") + 8));
  }
  L.cell = cell;
  L.grid_columns = columns == 0 ? static_cast<int>(panels.size())
                                : std::min(columns, static_cast<int>(panels.size()));
  const int grid_rows = (static_cast<int>(panels.size()) + L.grid_columns - 1) / L.grid_columns;

  L.title_height = title.empty() ? kMargin : std::ceil(kTitleFont * 2.2);
  L.panel_title_height = any_panel_title ? std::ceil(kPanelTitleFont * 1.8) : 6;
  L.y_tick_width = y_tick_text > 0 ? std::ceil(y_tick_text + 8) : 4;
  L.y_title_width = any_y_label ? std::ceil(kAxisFont * 1.6) : 0;
  L.x_tick_height = std::ceil(kTickFont * 1.6);
  L.x_title_height = any_x_label ? std::ceil(kAxisFont * 1.8) : 0;

  const double plot_width = max_cols * cell, plot_height = max_rows * cell;
  const double slot_width = L.y_title_width + L.y_tick_width + plot_width + 28;
  const double slot_height = L.panel_title_height + plot_height + L.x_tick_height + L.x_title_height + 10;

  L.geometry.panels.resize(panels.size());
  for (size_t p = 0; p < panels.size(); ++p) {
    const int gr = static_cast<int>(p) / L.grid_columns, gc = static_cast<int>(p) % L.grid_columns;
    PanelGeometry& g = L.geometry.panels[p];
    g.left = std::round(kMargin + gc * slot_width + L.y_title_width + L.y_tick_width);
    g.top = std::round(L.title_height + gr * slot_height + L.panel_title_height);
    g.cell_width = g.cell_height = cell;
    g.rows = static_cast<int>(panels[p].values.size());
    g.cols = static_cast<int>(panels[p].values[0].size());
  }

  // Colour bar right of the grid, as tall as the first row of panels (at least 160 px).
  const Heatmap& first = panels[0];
  const double range = first.vmax - first.vmin;
  L.bar_step = nice_step(range > 0 ? range : 1.0, 5);
  L.bar_ticks = ticks_within(first.vmin, range > 0 ? first.vmax : first.vmin, L.bar_step);
  set_font(cr, kTickFont);
  double bar_label_width = 0;
  for (double v : L.bar_ticks) bar_label_width = std::max(bar_label_width, text_width(cr, tick_label(v, L.bar_step)));
  L.bar_left = std::round(kMargin + L.grid_columns * slot_width);
  L.bar_top = L.geometry.panels[0].top;
  L.bar_height = std::max(plot_height, 160.0);

  L.geometry.width = static_cast<int>(std::ceil(L.bar_left + HeatLayout::kBarWidth + 8 + bar_label_width + kMargin));
  const double grid_bottom = L.title_height + grid_rows * slot_height;
  L.geometry.height = static_cast<int>(std::ceil(std::max(grid_bottom, L.bar_top + L.bar_height + kTickFont) + kMargin / 2));
  if (!title.empty()) {
    set_font(cr, kTitleFont, true);
    const int title_width = static_cast<int>(std::ceil(text_width(cr, title) + 2 * kMargin));
    if (title_width > L.geometry.width) {  // a title wider than the panels: centre the panels under it
      const double shift = std::floor((title_width - L.geometry.width) / 2.0);
      for (PanelGeometry& g : L.geometry.panels) g.left += shift;
      L.bar_left += shift;
      L.geometry.width = title_width;
    }
  }
  return L;
}

HeatLayout measure_heatmaps(const std::vector<Heatmap>& panels, const std::string& title, int columns) {
  Canvas scratch(1, 1);
  return layout_heatmaps(scratch.cr(), panels, title, columns);
}

// Every `step`-th label when the labels would overlap at one per `pitch` pixels.
int label_step(double label_extent, double pitch) {
  return std::max(1, static_cast<int>(std::ceil((label_extent + 4) / pitch)));
}

void draw_hatched_cell(cairo_t* cr, double x, double y, double size) {
  set_gray(cr, 0.86);
  cairo_rectangle(cr, x, y, size, size);
  cairo_fill(cr);
  cairo_save(cr);
  cairo_rectangle(cr, x, y, size, size);
  cairo_clip(cr);
  set_gray(cr, 0.6);
  cairo_set_line_width(cr, 1);
  for (double offset = -size; offset < size; offset += 5) {
    cairo_move_to(cr, x + offset, y + size);
    cairo_line_to(cr, x + offset + size, y);
  }
  cairo_stroke(cr);
  cairo_restore(cr);
}

void draw_panel(cairo_t* cr, const Heatmap& h, const PanelGeometry& g, const HeatLayout& L,
                bool origin_bottom) {
  const double cell = g.cell_width;
  const double range = h.vmax - h.vmin;
  for (int r = 0; r < g.rows; ++r) {
    const double y = g.top + (origin_bottom ? g.rows - 1 - r : r) * cell;
    for (int c = 0; c < g.cols; ++c) {
      const double x = g.left + c * cell;
      const double v = h.values[r][c];
      if (std::isnan(v)) {
        draw_hatched_cell(cr, x, y, cell);
        continue;
      }
      set_colormap(cr, range > 0 ? (v - h.vmin) / range : 0.0);
      cairo_rectangle(cr, x, y, cell, cell);
      cairo_fill(cr);
      if (h.annotate) {
        const double t = range > 0 ? (v - h.vmin) / range : 0.0;
        set_gray(cr, t > 0.6 ? 0.0 : 1.0);  // dark text on the light end of viridis
        set_font(cr, kCellFont);
        char text[32];
        std::snprintf(text, sizeof(text), "%.2f", v);
        draw_text(cr, text, x + cell / 2, y + cell / 2, HAlign::Center);
      }
    }
  }
  // Frame.
  set_gray(cr, 0.25);
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, g.left - 0.5, g.top - 0.5, g.cols * cell + 1, g.rows * cell + 1);
  cairo_stroke(cr);

  // Tick labels, thinned so that they do not overlap.
  set_font(cr, kTickFont);
  cairo_font_extents_t font;
  cairo_font_extents(cr, &font);
  double x_extent = 0;
  for (const std::string& t : h.x_ticks) x_extent = std::max(x_extent, text_width(cr, t));
  const int x_step = label_step(x_extent, cell);
  const int y_step = label_step(font.ascent + font.descent - 4, cell);
  const double bottom = g.top + g.rows * cell;
  set_gray(cr, 0.1);
  for (int c = 0; c < g.cols && c < static_cast<int>(h.x_ticks.size()); c += x_step) {
    const double x = g.left + (c + 0.5) * cell;
    cairo_move_to(cr, x, bottom);
    cairo_line_to(cr, x, bottom + 3);
    cairo_stroke(cr);
    draw_text(cr, h.x_ticks[c], x, bottom + 3 + kTickFont * 0.7, HAlign::Center);
  }
  for (int r = 0; r < g.rows && r < static_cast<int>(h.y_ticks.size()); r += y_step) {
    const double y = g.top + ((origin_bottom ? g.rows - 1 - r : r) + 0.5) * cell;
    cairo_move_to(cr, g.left, y);
    cairo_line_to(cr, g.left - 3, y);
    cairo_stroke(cr);
    draw_text(cr, h.y_ticks[r], g.left - 5, y, HAlign::Right);
  }

  // Axis titles and panel title.
  set_font(cr, kAxisFont);
  draw_text(cr, h.x_label, g.left + g.cols * cell / 2, bottom + L.x_tick_height + L.x_title_height / 2,
            HAlign::Center);
  draw_vertical_text(cr, h.y_label, g.left - L.y_tick_width - L.y_title_width / 2, g.top + g.rows * cell / 2);
  set_font(cr, kPanelTitleFont, true);
  draw_text(cr, h.title, g.left + g.cols * cell / 2, g.top - L.panel_title_height / 2, HAlign::Center);
}

void draw_colour_bar(cairo_t* cr, const Heatmap& first, const HeatLayout& L) {
  const double range = first.vmax - first.vmin;
  const int steps = static_cast<int>(L.bar_height);
  for (int i = 0; i < steps; ++i) {
    set_colormap(cr, 1.0 - (i + 0.5) / steps);  // top = vmax
    cairo_rectangle(cr, L.bar_left, L.bar_top + i, HeatLayout::kBarWidth, 1);
    cairo_fill(cr);
  }
  set_gray(cr, 0.25);
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, L.bar_left - 0.5, L.bar_top - 0.5, HeatLayout::kBarWidth + 1, L.bar_height + 1);
  cairo_stroke(cr);
  set_font(cr, kTickFont);
  set_gray(cr, 0.1);
  for (double v : L.bar_ticks) {
    const double t = range > 0 ? (v - first.vmin) / range : 0.5;
    const double y = std::round(L.bar_top + (1.0 - t) * L.bar_height) + 0.5;
    cairo_move_to(cr, L.bar_left + HeatLayout::kBarWidth, y);
    cairo_line_to(cr, L.bar_left + HeatLayout::kBarWidth + 4, y);
    cairo_stroke(cr);
    draw_text(cr, tick_label(v, L.bar_step), L.bar_left + HeatLayout::kBarWidth + 7, y, HAlign::Left);
  }
}

// ---------------------------------------------------------------- line charts

// Tableau 10: distinct on white, readable for most colour-blind viewers.
constexpr std::array<std::array<uint8_t, 3>, 10> kSeriesColours = {{
    {0x1f, 0x77, 0xb4}, {0xff, 0x7f, 0x0e}, {0x2c, 0xa0, 0x2c}, {0xd6, 0x27, 0x28},
    {0x94, 0x67, 0xbd}, {0x8c, 0x56, 0x4b}, {0xe3, 0x77, 0xc2}, {0x7f, 0x7f, 0x7f},
    {0xbc, 0xbd, 0x22}, {0x17, 0xbe, 0xcf},
}};

// One axis: data range -> pixels, with its ticks.
struct Axis {
  double lo = 0, hi = 1;  // in axis units (log10 of the value for a log axis)
  bool log = false;
  std::vector<double> ticks;  // axis units
  double step = 1;
  double transform(double v) const { return log ? std::log10(v) : v; }
  std::string label(double tick) const {
    if (!log) return tick_label(tick, step);
    char text[32];
    std::snprintf(text, sizeof(text), "%g", std::pow(10.0, tick));
    return text;
  }
};

Axis make_axis(double lo, double hi, bool log) {
  Axis a;
  a.log = log;
  if (log) {
    a.lo = std::floor(lo);
    a.hi = std::ceil(hi);
    if (a.hi <= a.lo) a.hi = a.lo + 1;
    a.step = std::ceil((a.hi - a.lo) / 8);
    a.ticks = ticks_within(a.lo, a.hi, a.step);
    if (a.hi - a.lo <= 3) {  // few decades: also 2x and 5x
      for (double decade = a.lo; decade < a.hi; ++decade)
        for (double m : {2.0, 5.0}) a.ticks.push_back(decade + std::log10(m));
      std::sort(a.ticks.begin(), a.ticks.end());
    }
    return a;
  }
  if (hi <= lo) {
    const double pad = lo != 0 ? std::abs(lo) * 0.1 : 1.0;
    lo -= pad;
    hi += pad;
  }
  a.step = nice_step(hi - lo, 6);
  a.lo = std::floor(lo / a.step + 1e-9) * a.step;
  a.hi = std::ceil(hi / a.step - 1e-9) * a.step;
  a.ticks = ticks_within(a.lo, a.hi, a.step);
  return a;
}

bool drawable(const LineChart& chart, double x, double y) {
  return std::isfinite(x) && std::isfinite(y) && (!chart.log_y || y > 0);
}

}  // namespace

HeatmapGeometry heatmap_geometry(const std::vector<Heatmap>& panels, const std::string& title,
                                 int columns) {
  validate_heatmaps("heatmap_geometry", panels, columns);
  return measure_heatmaps(panels, title, columns).geometry;
}

void write_heatmaps_png(const std::string& path, const std::vector<Heatmap>& panels,
                        const std::string& title, int columns, bool origin_bottom) {
  validate_heatmaps(path, panels, columns);
  const HeatLayout L = measure_heatmaps(panels, title, columns);
  Canvas canvas(L.geometry.width, L.geometry.height);
  cairo_t* cr = canvas.cr();
  set_gray(cr, 0.0);
  set_font(cr, kTitleFont, true);
  draw_text(cr, title, L.geometry.width / 2.0, L.title_height / 2, HAlign::Center);
  for (size_t p = 0; p < panels.size(); ++p)
    draw_panel(cr, panels[p], L.geometry.panels[p], L, origin_bottom);
  draw_colour_bar(cr, panels[0], L);
  write_png(canvas.surface(), path);
}

void write_line_chart_png(const std::string& path, const LineChart& chart) {
  validate_line_chart(path, chart);
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  for (const Series& s : chart.series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!drawable(chart, s.x[i], s.y[i])) continue;
      const double y = chart.log_y ? std::log10(s.y[i]) : s.y[i];
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
    }
  const Axis x_axis = make_axis(x_lo, x_hi, false);
  const Axis y_axis = make_axis(y_lo, y_hi, chart.log_y);

  constexpr int kWidth = 900, kHeight = 560;
  Canvas canvas(kWidth, kHeight);
  cairo_t* cr = canvas.cr();
  set_font(cr, kTickFont);
  double y_label_width = 0;
  for (double t : y_axis.ticks) y_label_width = std::max(y_label_width, text_width(cr, y_axis.label(t)));
  const double left = std::round(kMargin + kAxisFont * 1.8 + y_label_width + 8);
  const double top = chart.title.empty() ? kMargin : std::ceil(kTitleFont * 2.4);
  const double right = kWidth - 24;
  const double bottom = std::round(kHeight - kMargin - kAxisFont * 1.8 - kTickFont * 1.8);
  auto px = [&](double x) { return left + (x - x_axis.lo) / (x_axis.hi - x_axis.lo) * (right - left); };
  auto py = [&](double y) {
    return bottom - (y_axis.transform(y) - y_axis.lo) / (y_axis.hi - y_axis.lo) * (bottom - top);
  };

  // Grid, ticks and tick labels.
  cairo_set_line_width(cr, 1);
  for (double t : x_axis.ticks) {
    const double x = std::round(left + (t - x_axis.lo) / (x_axis.hi - x_axis.lo) * (right - left)) + 0.5;
    set_gray(cr, 0.9);
    cairo_move_to(cr, x, top);
    cairo_line_to(cr, x, bottom);
    cairo_stroke(cr);
    set_gray(cr, 0.1);
    draw_text(cr, x_axis.label(t), x, bottom + 4 + kTickFont * 0.7, HAlign::Center);
  }
  for (double t : y_axis.ticks) {
    const double y = std::round(bottom - (t - y_axis.lo) / (y_axis.hi - y_axis.lo) * (bottom - top)) + 0.5;
    set_gray(cr, 0.9);
    cairo_move_to(cr, left, y);
    cairo_line_to(cr, right, y);
    cairo_stroke(cr);
    set_gray(cr, 0.1);
    draw_text(cr, y_axis.label(t), left - 5, y, HAlign::Right);
  }
  set_gray(cr, 0.25);
  cairo_rectangle(cr, left + 0.5, top + 0.5, right - left, bottom - top);
  cairo_stroke(cr);

  // Series, clipped to the plot area.
  cairo_save(cr);
  cairo_rectangle(cr, left, top, right - left, bottom - top);
  cairo_clip(cr);
  cairo_set_line_width(cr, 2);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (size_t k = 0; k < chart.series.size(); ++k) {
    const Series& s = chart.series[k];
    const auto& rgb = kSeriesColours[k % kSeriesColours.size()];
    cairo_set_source_rgb(cr, rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0);
    bool pen_down = false;
    size_t points = 0;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!drawable(chart, s.x[i], s.y[i])) {
        pen_down = false;
        continue;
      }
      ++points;
      if (pen_down)
        cairo_line_to(cr, px(s.x[i]), py(s.y[i]));
      else
        cairo_move_to(cr, px(s.x[i]), py(s.y[i]));
      pen_down = true;
    }
    cairo_stroke(cr);
    if (points <= 60)  // markers while they stay apart
      for (size_t i = 0; i < s.x.size(); ++i)
        if (drawable(chart, s.x[i], s.y[i])) {
          cairo_arc(cr, px(s.x[i]), py(s.y[i]), 3, 0, 2 * std::numbers::pi);
          cairo_fill(cr);
        }
  }
  cairo_restore(cr);

  // Titles.
  set_gray(cr, 0.0);
  set_font(cr, kTitleFont, true);
  draw_text(cr, chart.title, kWidth / 2.0, top / 2, HAlign::Center);
  set_font(cr, kAxisFont);
  draw_text(cr, chart.x_label, (left + right) / 2, kHeight - kMargin - kAxisFont * 0.6, HAlign::Center);
  draw_vertical_text(cr, chart.y_label, kMargin + kAxisFont * 0.7, (top + bottom) / 2);

  // Legend, top right inside the plot.
  std::vector<size_t> named;
  for (size_t k = 0; k < chart.series.size(); ++k)
    if (!chart.series[k].name.empty()) named.push_back(k);
  if (!named.empty()) {
    set_font(cr, kTickFont);
    double name_width = 0;
    for (size_t k : named) name_width = std::max(name_width, text_width(cr, chart.series[k].name));
    const double row = kTickFont * 1.6, box_w = 24 + 8 + name_width + 16, box_h = named.size() * row + 8;
    const double bx = right - box_w - 8, by = top + 8;
    cairo_set_source_rgba(cr, 1, 1, 1, 0.88);
    cairo_rectangle(cr, bx, by, box_w, box_h);
    cairo_fill_preserve(cr);
    set_gray(cr, 0.6);
    cairo_set_line_width(cr, 1);
    cairo_stroke(cr);
    for (size_t i = 0; i < named.size(); ++i) {
      const auto& rgb = kSeriesColours[named[i] % kSeriesColours.size()];
      const double y = by + 4 + (i + 0.5) * row;
      cairo_set_source_rgb(cr, rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0);
      cairo_set_line_width(cr, 2);
      cairo_move_to(cr, bx + 8, y);
      cairo_line_to(cr, bx + 32, y);
      cairo_stroke(cr);
      set_gray(cr, 0.1);
      draw_text(cr, chart.series[named[i]].name, bx + 40, y, HAlign::Left);
    }
  }
  write_png(canvas.surface(), path);
}

#endif  // PODKV_HAVE_CAIRO

}  // namespace podkv::plot
