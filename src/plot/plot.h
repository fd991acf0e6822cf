// PNG charts for the tools (analyze's similarity heatmaps, training curves),
// drawn with Cairo. Cairo is optional in the build: without it (no
// PODKV_HAVE_CAIRO) png_available() is false and the writers throw Error.
// Files are written through PATH.tmp and renamed, so PATH is never half-written.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace podkv::plot {

struct Heatmap {
  std::string title;                          // panel title
  std::string x_label, y_label;               // axis titles
  std::vector<std::string> x_ticks, y_ticks;  // one label per column / row (may be thinned when crowded)
  std::vector<std::vector<double>> values;    // [row][col]; NaN = no data (drawn hatched/grey)
  double vmin = 0, vmax = 1;                  // colour scale range
  bool annotate = false;                      // print each cell's value in the cell
};

// Panels side by side (`columns` per row, 0 = all in one row) sharing one
// colour scale (a labelled colour bar; the range is the first panel's
// vmin/vmax), with an overall title. Row 0 is drawn at the TOP (like a matrix)
// unless `origin_bottom`. Throws Error naming `path` on no panels, an empty or
// ragged `values`, vmax < vmin, or a file that cannot be written.
void write_heatmaps_png(const std::string& path, const std::vector<Heatmap>& panels,
                        const std::string& title, int columns = 0, bool origin_bottom = false);

struct Series {
  std::string name;
  std::vector<double> x, y;
};
struct LineChart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool log_y = false;
};
// Axes with tick values, one colour per series, a legend. Points that are not
// finite (or <= 0 with log_y) are left out and break the line. Throws Error
// naming `path` when no series has a drawable point, x and y differ in length,
// or the file cannot be written.
void write_line_chart_png(const std::string& path, const LineChart& chart);

// True when built with Cairo (PODKV_HAVE_CAIRO).
bool png_available();

// --- Exposed for tests: the colour map and where heatmap cells land. ---

// The perceptual colour map (viridis) at t in [0, 1] (clamped), as 8-bit RGB.
std::array<uint8_t, 3> colormap_rgb(double t);

// Pixel rectangle of one heatmap panel's cell grid in the image that
// write_heatmaps_png writes for the same arguments: cell (r, c) covers
// x in [left + c*cell_width, +cell_width), y in [top + r'*cell_height, ...)
// with r' = r, or rows-1-r when origin_bottom.
struct PanelGeometry {
  double left = 0, top = 0, cell_width = 0, cell_height = 0;
  int rows = 0, cols = 0;
};
struct HeatmapGeometry {
  int width = 0, height = 0;          // image size in pixels
  std::vector<PanelGeometry> panels;  // one per panel
};
HeatmapGeometry heatmap_geometry(const std::vector<Heatmap>& panels, const std::string& title,
                                 int columns = 0);

}  // namespace podkv::plot
