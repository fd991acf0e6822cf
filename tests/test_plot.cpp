// PNG charts: the files are read back with Cairo and checked pixel by pixel
// at the cells whose colour is known (the colour map's ends, the NaN grey).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <unistd.h>
#include <vector>

#include "plot/plot.h"
#include "util/error.h"

#ifdef PODKV_HAVE_CAIRO
#include <cairo.h>
#endif

namespace podkv::plot {
namespace {

namespace fs = std::filesystem;

class PlotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!png_available()) GTEST_SKIP() << "built without Cairo";
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("podkv_plot_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

#ifdef PODKV_HAVE_CAIRO

// A PNG read back as RGB pixels.
struct Image {
  int width = 0, height = 0;
  std::vector<std::array<int, 3>> pixels;  // [y * width + x]
  std::array<int, 3> at(double x, double y) const {
    return pixels[static_cast<int>(y) * width + static_cast<int>(x)];
  }
};

Image read_png(const fs::path& path) {
  cairo_surface_t* s = cairo_image_surface_create_from_png(path.c_str());
  Image image;
  if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
    ADD_FAILURE() << "cannot read " << path;
    cairo_surface_destroy(s);
    return image;
  }
  cairo_surface_flush(s);
  image.width = cairo_image_surface_get_width(s);
  image.height = cairo_image_surface_get_height(s);
  const int stride = cairo_image_surface_get_stride(s);
  const unsigned char* data = cairo_image_surface_get_data(s);
  for (int y = 0; y < image.height; ++y)
    for (int x = 0; x < image.width; ++x) {
      uint32_t argb;
      std::memcpy(&argb, data + y * stride + x * 4, 4);
      image.pixels.push_back({static_cast<int>((argb >> 16) & 255), static_cast<int>((argb >> 8) & 255),
                              static_cast<int>(argb & 255)});
    }
  cairo_surface_destroy(s);
  return image;
}

void expect_colour(const std::array<int, 3>& got, const std::array<uint8_t, 3>& want, const std::string& where) {
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(got[c], want[c], 1) << where << " channel " << c;
}

// Centre of cell (r, c) of a panel, row 0 at the top unless origin_bottom.
std::pair<double, double> cell_centre(const PanelGeometry& g, int r, int c, bool origin_bottom = false) {
  const int row = origin_bottom ? g.rows - 1 - r : r;
  return {g.left + (c + 0.5) * g.cell_width, g.top + (row + 0.5) * g.cell_height};
}

Heatmap two_by_two() {
  Heatmap h;
  h.title = "panel";
  h.x_label = "column";
  h.y_label = "row";
  h.x_ticks = {"c0", "c1"};
  h.y_ticks = {"r0", "r1"};
  h.values = {{-2.0, 3.0}, {3.0, std::numeric_limits<double>::quiet_NaN()}};
  h.vmin = -2.0;
  h.vmax = 3.0;
  return h;
}

TEST_F(PlotTest, HeatmapCellsHaveColourMapEnds) {
  const std::vector<Heatmap> panels = {two_by_two()};
  for (bool origin_bottom : {false, true}) {
    const fs::path path = dir_ / (origin_bottom ? "bottom.png" : "top.png");
    write_heatmaps_png(path, panels, "Two by two", 0, origin_bottom);
    ASSERT_FALSE(fs::exists(path.string() + ".tmp"));
    const Image image = read_png(path);
    const HeatmapGeometry geometry = heatmap_geometry(panels, "Two by two");
    ASSERT_EQ(image.width, geometry.width);
    ASSERT_EQ(image.height, geometry.height);
    ASSERT_EQ(geometry.panels.size(), 1u);
    const PanelGeometry& g = geometry.panels[0];
    EXPECT_EQ(g.rows, 2);
    EXPECT_EQ(g.cols, 2);
    auto [x00, y00] = cell_centre(g, 0, 0, origin_bottom);
    auto [x01, y01] = cell_centre(g, 0, 1, origin_bottom);
    auto [x10, y10] = cell_centre(g, 1, 0, origin_bottom);
    auto [x11, y11] = cell_centre(g, 1, 1, origin_bottom);
    expect_colour(image.at(x00, y00), colormap_rgb(0.0), "cell (0,0) = vmin");
    expect_colour(image.at(x01, y01), colormap_rgb(1.0), "cell (0,1) = vmax");
    expect_colour(image.at(x10, y10), colormap_rgb(1.0), "cell (1,0) = vmax");
    // NaN: grey (hatched), never a colour of the map.
    const auto nan_pixel = image.at(x11 + 2, y11);
    EXPECT_EQ(nan_pixel[0], nan_pixel[1]);
    EXPECT_EQ(nan_pixel[1], nan_pixel[2]);
    // Row 0 is above row 1 unless origin_bottom.
    EXPECT_EQ(y00 < y10, !origin_bottom);
  }
  // The ends of the map are viridis' ends; the middle is its green-blue.
  expect_colour({68, 1, 84}, colormap_rgb(0.0), "viridis(0)");
  expect_colour({253, 231, 37}, colormap_rgb(1.0), "viridis(1)");
  expect_colour({68, 1, 84}, colormap_rgb(-5.0), "clamped below");
}

TEST_F(PlotTest, GridOfPanelsAndAnnotations) {
  std::vector<Heatmap> panels;
  for (int p = 0; p < 5; ++p) {
    Heatmap h;
    h.title = "KV head " + std::to_string(p);
    h.x_label = "layer";
    h.y_label = "layer";
    const int n = 12;
    h.values.assign(n, std::vector<double>(n));
    for (int r = 0; r < n; ++r) {
      h.x_ticks.push_back(std::to_string(r));
      h.y_ticks.push_back(std::to_string(r));
      for (int c = 0; c < n; ++c) h.values[r][c] = r == c ? 1.0 : 1.0 / (1 + std::abs(r - c) + p);
    }
    h.annotate = p == 0;
    panels.push_back(h);
  }
  const fs::path path = dir_ / "grid.png";
  write_heatmaps_png(path, panels, "Layer similarity (1 - JS)", 3);
  const Image image = read_png(path);
  const HeatmapGeometry geometry = heatmap_geometry(panels, "Layer similarity (1 - JS)", 3);
  ASSERT_EQ(image.width, geometry.width);
  ASSERT_EQ(image.height, geometry.height);
  ASSERT_EQ(geometry.panels.size(), 5u);
  // 3 per row: panels 0..2 side by side, 3 and 4 below.
  EXPECT_EQ(geometry.panels[0].top, geometry.panels[2].top);
  EXPECT_LT(geometry.panels[0].left, geometry.panels[1].left);
  EXPECT_GT(geometry.panels[3].top, geometry.panels[0].top + 12 * geometry.panels[0].cell_height);
  EXPECT_EQ(geometry.panels[3].left, geometry.panels[0].left);
  // Diagonal cells (value 1 = vmax) of an unannotated panel; a corner of an annotated one.
  for (int p = 1; p < 5; ++p) {
    auto [x, y] = cell_centre(geometry.panels[p], 5, 5);
    expect_colour(image.at(x, y), colormap_rgb(1.0), "diagonal of panel " + std::to_string(p));
  }
  const PanelGeometry& g0 = geometry.panels[0];
  expect_colour(image.at(g0.left + 1, g0.top + 1), colormap_rgb(1.0), "corner of annotated cell");
}

TEST_F(PlotTest, LineChart) {
  LineChart chart;
  chart.title = "Loss";
  chart.x_label = "step";
  chart.y_label = "loss";
  Series a{"train", {}, {}}, b{"eval", {}, {}};
  for (int i = 0; i < 100; ++i) {
    a.x.push_back(i);
    a.y.push_back(5.0 * std::exp(-i / 30.0) + 0.5);
  }
  b.x = {0, 50, 99};
  b.y = {5.5, 1.6, std::numeric_limits<double>::quiet_NaN()};
  chart.series = {a, b};
  const fs::path path = dir_ / "loss.png";
  write_line_chart_png(path, chart);
  Image image = read_png(path);
  EXPECT_EQ(image.width, 900);
  EXPECT_EQ(image.height, 560);
  // Some pixels carry the first series' colour (blue).
  int blue = 0;
  for (const auto& p : image.pixels) blue += p[0] < 60 && p[1] > 100 && p[1] < 140 && p[2] > 160;
  EXPECT_GT(blue, 100);

  chart.log_y = true;
  chart.series[0].y[3] = 0.0;  // left out on a log axis
  write_line_chart_png(path, chart);
  image = read_png(path);
  EXPECT_EQ(image.width, 900);
}

#endif  // PODKV_HAVE_CAIRO

TEST_F(PlotTest, ErrorsNameThePath) {
  const std::string bad_dir = (dir_ / "missing" / "x.png").string();
  auto expect_error = [](auto&& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error, expected one mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Heatmap h;
  h.values = {{0.5, 0.5}};
  expect_error([&] { write_heatmaps_png(bad_dir, {h}, "t"); }, bad_dir);
  expect_error([&] { write_heatmaps_png("empty.png", {}, "t"); }, "empty.png");
  Heatmap empty;
  expect_error([&] { write_heatmaps_png("novalues.png", {empty}, "t"); }, "novalues.png");
  Heatmap ragged;
  ragged.values = {{1, 2}, {3}};
  expect_error([&] { write_heatmaps_png("ragged.png", {ragged}, "t"); }, "row 1 has 1");
  LineChart chart;
  expect_error([&] { write_line_chart_png("nothing.png", chart); }, "nothing.png");
  chart.series = {{"s", {1, 2}, {1}}};
  expect_error([&] { write_line_chart_png("lengths.png", chart); }, "lengths.png");
  EXPECT_FALSE(fs::exists("empty.png"));
}

}  // namespace
}  // namespace podkv::plot
