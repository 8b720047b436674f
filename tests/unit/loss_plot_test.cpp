// The loss plot: a well-formed SVG (checked by a small XML parser below) with one line per series holding the
// right points, inside the frame, with readable distinct tick labels, for ordinary and awkward inputs alike.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "qtune/train/loss_plot.h"
#include "test_util.h"

namespace {

using namespace qtune;
using train::MetricRecord;

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// --- a minimal XML well-formedness checker ---------------------------------------------------------------
struct Element {
  std::string name;
  std::map<std::string, std::string> attrs;  // entity-decoded
  std::string text;                          // direct text content, entity-decoded
  int parent = -1;
};

class XmlReader {
 public:
  explicit XmlReader(const std::string& s) : s_(s) {}

  // Every element in document order; ADD_FAILUREs (and returns what it has) on the first well-formedness error.
  std::vector<Element> parse() {
    skip_space();
    if (s_.compare(i_, 5, "<?xml") == 0) {
      i_ = s_.find("?>", i_);
      if (i_ == std::string::npos) return error("unterminated XML declaration");
      i_ += 2;
    }
    std::vector<int> open;
    bool root_seen = false;
    while (i_ < s_.size()) {
      if (s_[i_] != '<') {
        const size_t end = s_.find('<', i_);
        const std::string text = s_.substr(i_, end == std::string::npos ? std::string::npos : end - i_);
        if (open.empty()) {
          if (text.find_first_not_of(" \t\r\n") != std::string::npos) return error("text outside the root element");
        } else if (!decode(text, elements_[open.back()].text)) {
          return error("bad text: " + text);
        }
        i_ = end == std::string::npos ? s_.size() : end;
        continue;
      }
      if (s_.compare(i_, 4, "<!--") == 0) {
        i_ = s_.find("-->", i_);
        if (i_ == std::string::npos) return error("unterminated comment");
        i_ += 3;
        continue;
      }
      if (s_.compare(i_, 2, "</") == 0) {
        i_ += 2;
        const std::string name = read_name();
        skip_space();
        if (i_ >= s_.size() || s_[i_] != '>') return error("bad closing tag");
        ++i_;
        if (open.empty() || elements_[open.back()].name != name) return error("mismatched </" + name + ">");
        open.pop_back();
        continue;
      }
      ++i_;
      if (open.empty() && root_seen) return error("a second root element");
      root_seen = true;
      Element e;
      e.name = read_name();
      if (e.name.empty()) return error("empty tag name");
      e.parent = open.empty() ? -1 : open.back();
      for (;;) {
        const bool had_space = skip_space();
        if (i_ >= s_.size()) return error("unterminated tag <" + e.name);
        if (s_[i_] == '>' || s_.compare(i_, 2, "/>") == 0) break;
        if (!had_space) return error("attributes of <" + e.name + "> are not separated by space");
        const std::string key = read_name();
        if (key.empty() || i_ + 1 >= s_.size() || s_[i_] != '=' || (s_[i_ + 1] != '"' && s_[i_ + 1] != '\''))
          return error("bad attribute in <" + e.name + ">");
        const char quote = s_[i_ + 1];
        const size_t end = s_.find(quote, i_ + 2);
        if (end == std::string::npos) return error("unterminated attribute value");
        const std::string raw = s_.substr(i_ + 2, end - i_ - 2);
        std::string value;
        if (raw.find('<') != std::string::npos || !decode(raw, value)) return error("bad attribute value " + raw);
        if (!e.attrs.emplace(key, value).second) return error("duplicate attribute " + key);
        i_ = end + 1;
      }
      const bool self_closing = s_[i_] == '/';
      i_ += self_closing ? 2 : 1;
      elements_.push_back(e);
      if (!self_closing) open.push_back(static_cast<int>(elements_.size()) - 1);
    }
    if (!open.empty()) return error("<" + elements_[open.back()].name + "> is never closed");
    if (!root_seen) return error("no root element");
    return elements_;
  }

 private:
  std::vector<Element> error(const std::string& what) {
    ADD_FAILURE() << "not well-formed XML at offset " << i_ << ": " << what;
    return elements_;
  }
  bool skip_space() {
    const size_t start = i_;
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
    return i_ > start;
  }
  std::string read_name() {
    const size_t start = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' || s_[i_] == '_' ||
                              s_[i_] == ':' || s_[i_] == '.'))
      ++i_;
    return s_.substr(start, i_ - start);
  }
  static bool decode(const std::string& in, std::string& out) {
    static const std::map<std::string, std::string> kEntities = {
        {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}};
    for (size_t k = 0; k < in.size(); ++k) {
      if (in[k] != '&') {
        out += in[k];
        continue;
      }
      const size_t semi = in.find(';', k);
      if (semi == std::string::npos) return false;
      auto it = kEntities.find(in.substr(k + 1, semi - k - 1));
      if (it == kEntities.end()) return false;
      out += it->second;
      k = semi;
    }
    return true;
  }

  const std::string& s_;
  size_t i_ = 0;
  std::vector<Element> elements_;
};

// --- helpers over the parsed SVG ----------------------------------------------------------------------
struct Svg {
  std::string text;
  std::vector<Element> elements;

  std::vector<const Element*> with_class(const std::string& cls) const {
    std::vector<const Element*> out;
    for (const auto& e : elements)
      if (e.attrs.count("class") && e.attrs.at("class") == cls) out.push_back(&e);
    return out;
  }
  const Element* one(const std::string& cls) const {
    auto all = with_class(cls);
    return all.size() == 1 ? all[0] : nullptr;
  }
  std::vector<const Element*> children(const Element* parent, const std::string& name) const {
    std::vector<const Element*> out;
    for (const auto& e : elements)
      if (e.parent >= 0 && &elements[e.parent] == parent && e.name == name) out.push_back(&e);
    return out;
  }
  bool has_text(const std::string& t) const {
    for (const auto& e : elements)
      if (e.text == t) return true;
    return false;
  }
};

Svg render(const std::vector<MetricRecord>& records, const std::string& title = "run",
           const train::LossPlotOptions& options = {}) {
  Svg svg;
  svg.text = train::loss_plot_svg(records, title, options);
  svg.elements = XmlReader(svg.text).parse();
  return svg;
}

struct XY {
  double x, y;
};

std::vector<XY> points_of(const Element* polyline) {
  std::vector<XY> pts;
  std::istringstream in(polyline->attrs.at("points"));
  std::string pair;
  while (in >> pair) {
    const size_t comma = pair.find(',');
    pts.push_back({std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1))});
  }
  return pts;
}

double attr(const Element* e, const std::string& key) { return std::stod(e->attrs.at(key)); }

// Every numeric attribute is a finite number: no "nan" or "inf" leaks into coordinates.
void expect_finite_geometry(const Svg& svg) {
  EXPECT_EQ(svg.text.find("nan"), std::string::npos);
  EXPECT_EQ(svg.text.find("inf"), std::string::npos);
  for (const auto& e : svg.elements)
    for (const char* key : {"x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "width", "height"})
      if (e.attrs.count(key)) {
        const double v = std::stod(e.attrs.at(key));
        EXPECT_TRUE(std::isfinite(v)) << e.name << " " << key << "=" << e.attrs.at(key);
      }
}

// Every point of `cls` lies inside the plot frame (within rounding).
void expect_inside_frame(const Svg& svg, const std::string& cls) {
  const Element* frame = svg.one("frame");
  ASSERT_NE(frame, nullptr);
  const double x0 = attr(frame, "x"), y0 = attr(frame, "y"), x1 = x0 + attr(frame, "width"),
               y1 = y0 + attr(frame, "height");
  const Element* line = svg.one(cls);
  ASSERT_NE(line, nullptr) << cls;
  for (const auto& p : points_of(line)) {
    EXPECT_GE(p.x, x0 - 0.1) << cls;
    EXPECT_LE(p.x, x1 + 0.1) << cls;
    EXPECT_GE(p.y, y0 - 0.1) << cls;
    EXPECT_LE(p.y, y1 + 0.1) << cls;
  }
}

// The y tick labels: all distinct numbers, increasing upwards, and the data range lies within them.
void expect_readable_y_ticks(const Svg& svg, double data_min, double data_max) {
  const Element* group = svg.one("y-ticks");
  ASSERT_NE(group, nullptr);
  const auto labels = svg.children(group, "text");
  ASSERT_GE(labels.size(), 2u);
  ASSERT_LE(labels.size(), 12u);
  std::set<std::string> seen;
  for (size_t i = 0; i < labels.size(); ++i) {
    EXPECT_TRUE(seen.insert(labels[i]->text).second) << "tick label repeated: " << labels[i]->text;
    if (i > 0) {
      EXPECT_GT(std::stod(labels[i]->text), std::stod(labels[i - 1]->text));
      EXPECT_LT(attr(labels[i], "y"), attr(labels[i - 1], "y"));
    }
  }
  EXPECT_LE(std::stod(labels.front()->text), data_min);
  EXPECT_GE(std::stod(labels.back()->text), data_max);
}

std::vector<MetricRecord> a_run(int64_t steps, int64_t eval_every) {
  std::vector<MetricRecord> records;
  for (int64_t s = 1; s <= steps; ++s) {
    records.push_back({"train", s, {{"loss", 2.0 + 1.5 * std::exp(-s / 30.0) + 0.15 * std::sin(s * 1.7)}, {"lr", 1e-4}}});
    if (s % eval_every == 0) records.push_back({"eval", s, {{"loss", 2.1 + 1.4 * std::exp(-s / 30.0)}, {"perplexity", 9}}});
  }
  return records;
}

TEST(LossPlot, EachSeriesHasOneLineWithItsPointsAxisLabelsAndALegend) {
  auto records = a_run(100, 20);
  records[10].values[0].second = kNaN;  // a NaN train loss (step 11) and a NaN eval loss are skipped
  records.push_back({"eval", 110, {{"loss", kNaN}}});
  records.push_back({"note", 50, {{"loss", 100}}});  // other kinds are not plotted
  const Svg svg = render(records, "tiny-llama lora");

  ASSERT_NE(svg.one("train-loss"), nullptr);
  ASSERT_NE(svg.one("train-loss-ema"), nullptr);
  ASSERT_NE(svg.one("eval-loss"), nullptr);
  EXPECT_EQ(points_of(svg.one("train-loss")).size(), 99u);
  EXPECT_EQ(points_of(svg.one("train-loss-ema")).size(), 99u);
  EXPECT_EQ(points_of(svg.one("eval-loss")).size(), 5u);
  ASSERT_NE(svg.one("eval-markers"), nullptr);
  EXPECT_EQ(svg.children(svg.one("eval-markers"), "circle").size(), 5u);
  // Step order left to right.
  const auto train_pts = points_of(svg.one("train-loss"));
  for (size_t i = 1; i < train_pts.size(); ++i) EXPECT_GT(train_pts[i].x, train_pts[i - 1].x);

  EXPECT_TRUE(svg.has_text("step"));
  EXPECT_TRUE(svg.has_text("loss"));
  EXPECT_NE(svg.one("x-label"), nullptr);
  EXPECT_NE(svg.one("y-label"), nullptr);
  EXPECT_TRUE(svg.has_text("tiny-llama lora"));
  EXPECT_TRUE(svg.has_text("train loss"));
  EXPECT_TRUE(svg.has_text("eval loss"));
  EXPECT_TRUE(svg.has_text(fmt::format("train loss, smoothed (EMA {:.2f})", train::default_ema_weight(99))));
  // The subtitle gives the latest values, with the eval record's own perplexity.
  ASSERT_NE(svg.one("subtitle"), nullptr);
  EXPECT_NE(svg.one("subtitle")->text.find("step 100 · train loss "), std::string::npos) << svg.one("subtitle")->text;
  EXPECT_NE(svg.one("subtitle")->text.find("at step 100 (ppl 9)"), std::string::npos) << svg.one("subtitle")->text;

  expect_finite_geometry(svg);
  for (const char* cls : {"train-loss", "train-loss-ema", "eval-loss"}) expect_inside_frame(svg, cls);
  double lo = 1e9, hi = -1e9;
  for (const auto& r : records)
    if ((r.kind == "train" || r.kind == "eval") && std::isfinite(*r.value("loss")))
      lo = std::min(lo, *r.value("loss")), hi = std::max(hi, *r.value("loss"));
  expect_readable_y_ticks(svg, lo, hi);
}

TEST(LossPlot, TheSmoothedLineIsADebiasedEmaOfTheTrainLoss) {
  // Steps 0..40 at loss 4, 2, 4, 2, ... with EMA weight 0.5: the debiased EMA starts at the first value and the
  // raw line's vertical spread is far larger than the smoothed one's.
  std::vector<MetricRecord> records;
  for (int s = 0; s <= 40; ++s) records.push_back({"train", s, {{"loss", s % 2 ? 2.0 : 4.0}}});
  train::LossPlotOptions options;
  options.ema_weight = 0.5;
  const Svg svg = render(records, "ema", options);
  const auto raw = points_of(svg.one("train-loss")), smooth = points_of(svg.one("train-loss-ema"));
  ASSERT_EQ(raw.size(), smooth.size());
  EXPECT_NEAR(smooth[0].y, raw[0].y, 0.06);
  // Second point: (0.5*0.5*4 + 0.5*2) / (1 - 0.25) = 2/0.75 = 2.667, between the two raw values.
  const double ppu = (raw[1].y - raw[0].y) / (4.0 - 2.0);  // pixels per unit of loss decrease
  EXPECT_NEAR(smooth[1].y, raw[0].y + ppu * (4.0 - 2.0 / 0.75), 0.2);
  EXPECT_TRUE(svg.has_text("train loss, smoothed (EMA 0.50)"));
}

TEST(LossPlot, WithoutEvalRecordsThereIsNoEvalLineOrLegendEntry) {
  const Svg svg = render(a_run(30, 1000));
  EXPECT_TRUE(svg.with_class("eval-loss").empty());
  EXPECT_TRUE(svg.with_class("eval-markers").empty());
  EXPECT_FALSE(svg.has_text("eval loss"));
  EXPECT_TRUE(svg.has_text("train loss"));
  EXPECT_EQ(points_of(svg.one("train-loss")).size(), 30u);
  expect_finite_geometry(svg);
}

// A preference run logs TRL's rewards/margins: a panel under the loss draws them (and only then), on the same steps.
TEST(LossPlot, APreferenceRunGetsARewardMarginPanelUnderTheLoss) {
  auto records = a_run(60, 20);
  const Svg plain = render(records);
  EXPECT_TRUE(plain.with_class("margins-panel").empty());
  for (auto& r : records)
    r.values.push_back({"rewards/margins", r.kind == "train" ? -0.2 + 0.03 * static_cast<double>(r.step) : 1.0});
  const Svg svg = render(records);
  ASSERT_NE(svg.one("margins-panel"), nullptr);
  EXPECT_GT(std::stod(svg.elements[0].attrs.at("height")), std::stod(plain.elements[0].attrs.at("height")));
  const auto margin = points_of(svg.one("train-margin")), loss = points_of(svg.one("train-loss"));
  ASSERT_EQ(margin.size(), 60u);
  ASSERT_EQ(points_of(svg.one("train-margin-ema")).size(), 60u);
  EXPECT_EQ(svg.children(svg.one("eval-margin-markers"), "circle").size(), 3u);
  const Element* frame = svg.one("margin-frame");
  ASSERT_NE(frame, nullptr);
  const double y0 = attr(frame, "y"), y1 = y0 + attr(frame, "height");
  EXPECT_GT(y0, attr(svg.one("frame"), "y") + attr(svg.one("frame"), "height"));  // under the loss panel
  for (size_t i = 0; i < margin.size(); ++i) {
    EXPECT_NEAR(margin[i].x, loss[i].x, 0.01);  // the same step axis
    EXPECT_GE(margin[i].y, y0 - 0.1);
    EXPECT_LE(margin[i].y, y1 + 0.1);
    if (i > 0) EXPECT_LT(margin[i].y, margin[i - 1].y);  // a rising margin goes up
  }
  // The zero line lies where the margin crosses zero (between steps 6 and 7).
  const double zero = attr(svg.one("margin-zero"), "y1");
  EXPECT_LT(zero, margin[5].y);
  EXPECT_GT(zero, margin[7].y);
  EXPECT_TRUE(svg.has_text("reward margin"));
  expect_finite_geometry(svg);
}

TEST(LossPlot, OnlyEvalRecords) {
  const Svg svg = render({{"eval", 10, {{"loss", 3}}}, {"eval", 20, {{"loss", 2}}}});
  EXPECT_TRUE(svg.with_class("train-loss").empty());
  EXPECT_EQ(points_of(svg.one("eval-loss")).size(), 2u);
  EXPECT_FALSE(svg.has_text("train loss"));
  expect_finite_geometry(svg);
  expect_inside_frame(svg, "eval-loss");
}

TEST(LossPlot, ASinglePointIsDrawnAsAMarkerInsideTheFrame) {
  const Svg svg = render({{"train", 0, {{"loss", 5.25}}}});
  EXPECT_EQ(points_of(svg.one("train-loss")).size(), 1u);
  ASSERT_NE(svg.one("train-point"), nullptr);
  expect_finite_geometry(svg);
  expect_inside_frame(svg, "train-loss");
  expect_readable_y_ticks(svg, 5.25, 5.25);
}

TEST(LossPlot, AllEqualValuesGetARangeAroundThem) {
  std::vector<MetricRecord> records;
  for (int s = 1; s <= 10; ++s) records.push_back({"train", s, {{"loss", 0.0}}});
  const Svg svg = render(records);
  expect_finite_geometry(svg);
  expect_inside_frame(svg, "train-loss");
  expect_readable_y_ticks(svg, 0.0, 0.0);
}

TEST(LossPlot, HugeAndTinyRangesKeepDistinctTickLabelsAndPointsInFrame) {
  for (const auto& [lo, hi] : std::vector<std::pair<double, double>>{
           {1e-6, 1e6}, {2.0000001, 2.0000003}, {3e-9, 7e-9}, {1e12, 3e12}, {12345.0, 12345.5}}) {
    SCOPED_TRACE(fmt::format("range {} .. {}", lo, hi));
    std::vector<MetricRecord> records;
    for (int s = 0; s <= 20; ++s) records.push_back({"train", s * 1000, {{"loss", lo + (hi - lo) * (s % 5) / 4.0}}});
    const Svg svg = render(records);
    expect_finite_geometry(svg);
    expect_inside_frame(svg, "train-loss");
    expect_readable_y_ticks(svg, lo, hi);
  }
}

TEST(LossPlot, NoRecordsStillGivesAValidChartSayingSo) {
  const Svg svg = render({});
  EXPECT_TRUE(svg.has_text("no loss logged yet"));
  EXPECT_TRUE(svg.with_class("train-loss").empty());
  EXPECT_TRUE(svg.with_class("legend").empty());
  EXPECT_TRUE(svg.has_text("step"));
  expect_finite_geometry(svg);
  // Only NaN losses is the same as none.
  EXPECT_TRUE(render({{"train", 1, {{"loss", kNaN}}}}).has_text("no loss logged yet"));
}

TEST(LossPlot, TheTitleIsEscaped) {
  const std::string title = "run <7b> & \"friends\" 'q'";
  const Svg svg = render(a_run(5, 5), title);
  EXPECT_TRUE(svg.has_text(title));
}

TEST(LossPlot, ALongRunIsThinnedButKeepsItsSpikes) {
  std::vector<MetricRecord> records;
  for (int s = 1; s <= 100000; ++s) records.push_back({"train", s, {{"loss", s == 54321 ? 9.0 : 2.0 + (s % 7) * 0.01}}});
  const Svg svg = render(records);
  const auto pts = points_of(svg.one("train-loss"));
  EXPECT_LE(pts.size(), 2000u);
  EXPECT_GE(pts.size(), 500u);
  EXPECT_LT(svg.text.size(), 200000u);
  // The spike is the highest point on screen (smallest y) and sits at its step.
  const auto top = std::min_element(pts.begin(), pts.end(), [](const XY& a, const XY& b) { return a.y < b.y; });
  const Element* frame = svg.one("frame");
  const double x_of_spike = attr(frame, "x") + 54321.0 / 100000.0 * attr(frame, "width");
  EXPECT_NEAR(top->x, x_of_spike, 1.0);
  for (size_t i = 1; i < pts.size(); ++i) EXPECT_GE(pts[i].x, pts[i - 1].x);
  // Large step counts are labelled compactly.
  EXPECT_TRUE(svg.has_text("100k"));
}

TEST(LossPlot, WriteLossPlotWritesTheSvgToAFile) {
  const std::string path = test::temp_dir() + "/loss.svg";
  const auto records = a_run(40, 10);
  train::write_loss_plot(path, records, "file");
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), train::loss_plot_svg(records, "file"));
  train::write_loss_plot(path, a_run(50, 10), "again");  // overwrites in place
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()),
                          std::filesystem::directory_iterator{}),
            1);
}

}  // namespace
