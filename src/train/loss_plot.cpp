#include "qtune/train/loss_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "qtune/io/atomic_file.h"
#include "qtune/util/error.h"

namespace qtune::train {
namespace {

struct Point {
  double x, y;
};

// The palette of matplotlib's default cycle: familiar to anyone who has looked at a loss curve.
constexpr const char* kTrainColor = "#1f77b4";
constexpr const char* kEvalColor = "#ff7f0e";
constexpr const char* kGridColor = "#e8e8e8";
constexpr const char* kTextColor = "#333333";
constexpr const char* kMutedColor = "#6b6b6b";
constexpr const char* kMarginColor = "#2ca02c";
constexpr double kMarginPanelHeight = 190;

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0 at all.
        if (c < 0x20 && c != '\t' && c != '\n') out += ' ';
        else out += static_cast<char>(c);
    }
  }
  return out;
}

std::vector<Point> metric_points(const std::vector<MetricRecord>& records, const std::string& kind,
                                 const std::string& key) {
  std::vector<Point> pts;
  for (const auto& r : records) {
    if (r.kind != kind) continue;
    auto loss = r.value(key);
    // Clamped so that spans, padding and pixel positions stay finite even for a loss near DBL_MAX.
    if (loss && std::isfinite(*loss)) pts.push_back({static_cast<double>(r.step), std::clamp(*loss, -1e300, 1e300)});
  }
  std::stable_sort(pts.begin(), pts.end(), [](const Point& a, const Point& b) { return a.x < b.x; });
  return pts;
}

// Debiased EMA (TensorBoard's smoothing): without the 1 - w^n correction the curve would start near zero.
std::vector<Point> ema(const std::vector<Point>& pts, double weight) {
  std::vector<Point> out;
  out.reserve(pts.size());
  double acc = 0, debias = 1;
  for (const auto& p : pts) {
    acc = weight * acc + (1 - weight) * p.y;
    debias *= weight;
    out.push_back({p.x, acc / (1 - debias)});
  }
  return out;
}

// At most `max_points`: points are grouped by the pixel column they fall in and each group keeps its first,
// lowest, highest and last point (in step order), so the envelope and every spike survive the thinning.
std::vector<Point> thin(const std::vector<Point>& pts, size_t max_points, double x_lo, double x_hi) {
  if (pts.size() <= max_points || max_points < 4 || !(x_hi > x_lo)) return pts;
  const double buckets = static_cast<double>(max_points / 4);
  std::vector<Point> out;
  size_t begin = 0;
  while (begin < pts.size()) {
    const auto bucket_of = [&](const Point& p) {
      return std::min(buckets - 1, std::floor((p.x - x_lo) / (x_hi - x_lo) * buckets));
    };
    const double b = bucket_of(pts[begin]);
    size_t end = begin + 1, lo = begin, hi = begin;
    for (; end < pts.size() && bucket_of(pts[end]) == b; ++end) {
      if (pts[end].y < pts[lo].y) lo = end;
      if (pts[end].y > pts[hi].y) hi = end;
    }
    size_t keep[4] = {begin, std::min(lo, hi), std::max(lo, hi), end - 1};
    for (int k = 0; k < 4; ++k)
      if (k == 0 || keep[k] != keep[k - 1]) out.push_back(pts[keep[k]]);
    begin = end;
  }
  return out;
}

struct Axis {
  double lo = 0, hi = 1, step = 1;
  std::vector<double> ticks;
};

// Ticks at 1, 2 or 5 times a power of ten, about `target` of them, with the range widened to whole ticks.
// nonnegative: the quantity cannot go below zero (steps, and losses that are all >= 0), so no negative ticks.
Axis nice_axis(double lo, double hi, int target, bool integer_steps, bool nonnegative) {
  Axis a;
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (!(hi - lo > 1e-12 * std::max(std::abs(lo), std::abs(hi)))) {  // one value (or all equal): give it room
    const double mid = (lo + hi) / 2, pad = mid == 0 ? 1.0 : std::abs(mid) * 0.05;
    lo = mid - pad, hi = mid + pad;
  }
  if (nonnegative) lo = std::max(lo, 0.0);
  const double raw = (hi - lo) / target;
  double step = std::isfinite(raw) && raw > 0 ? std::pow(10.0, std::floor(std::log10(raw))) : 1.0;
  const double f = raw / step;
  step *= f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  if (integer_steps) step = std::max(1.0, std::round(step));
  if (!std::isfinite(step) || step <= 0) step = 1;
  a.step = step;
  a.lo = std::floor(lo / step) * step;
  a.hi = std::ceil(hi / step) * step;
  if (!(a.hi > a.lo)) a.hi = a.lo + step;
  for (int i = 0; i <= 40; ++i) {  // bounded: a degenerate range must not loop
    double t = a.lo + i * step;
    if (t > a.hi + step * 1e-9) break;
    if (std::abs(t) < step * 1e-9) t = 0;  // print 0, not 1.7e-17
    a.ticks.push_back(t);
  }
  return a;
}

// Enough significant digits that neighbouring ticks print differently, whatever the magnitude.
std::string tick_label(double v, const Axis& a) {
  const double max_abs = std::max({std::abs(a.lo), std::abs(a.hi), a.step});
  int digits = static_cast<int>(std::ceil(std::log10(max_abs / a.step))) + 1;
  if (max_abs < 1e6) digits = std::max(digits, static_cast<int>(std::floor(std::log10(max_abs))) + 1);
  digits = std::clamp(digits, 1, 15);
  return fmt::format("{:.{}g}", v, digits);
}

std::string step_label(double v, const Axis& a) {
  if (std::max(std::abs(a.lo), std::abs(a.hi)) >= 1e13) return fmt::format("{:.3g}", v);  // labels must not overlap
  const auto n = static_cast<long long>(std::llround(v));
  if (a.hi >= 1e7 && n % 1000000 == 0 && n != 0) return fmt::format("{}M", n / 1000000);
  if (a.hi >= 1e4 && n % 1000 == 0 && n != 0) return fmt::format("{}k", n / 1000);
  return fmt::format("{}", n);
}

std::string format_loss(double v) {
  if (std::abs(v) >= 1e4 || (v != 0 && std::abs(v) < 1e-3)) return fmt::format("{:.4g}", v);
  return fmt::format("{:.4f}", v);
}

class Canvas {
 public:
  Canvas(double left, double top, double right, double bottom, const Axis& x, const Axis& y)
      : left_(left), top_(top), right_(right), bottom_(bottom), x_(x), y_(y) {}
  double px(double v) const { return left_ + (v - x_.lo) / (x_.hi - x_.lo) * (right_ - left_); }
  double py(double v) const { return bottom_ - (v - y_.lo) / (y_.hi - y_.lo) * (bottom_ - top_); }
  std::string points(const std::vector<Point>& pts) const {
    std::string s;
    for (const auto& p : pts) s += fmt::format("{}{:.1f},{:.1f}", s.empty() ? "" : " ", px(p.x), py(p.y));
    return s;
  }

 private:
  double left_, top_, right_, bottom_;
  const Axis& x_;
  const Axis& y_;
};

// A panel's grid, tick labels and frame; `prefix` names its tick groups and frame apart from another panel's.
std::string axes_svg(const Canvas& c, const Axis& xa, const Axis& ya, double left, double top, double right,
                     double bottom, const std::string& prefix) {
  std::string svg = "<g class=\"grid\" stroke=\"" + std::string(kGridColor) + "\" stroke-width=\"1\">\n";
  for (double t : ya.ticks) svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\"/>\n", left, c.py(t), right);
  for (double t : xa.ticks) svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\"/>\n", c.px(t), top, bottom);
  svg += "</g>\n";
  svg += fmt::format("<g class=\"{}y-ticks\" text-anchor=\"end\" fill=\"{}\">\n", prefix, kMutedColor);
  for (double t : ya.ticks)
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" dy=\"0.35em\">{}</text>\n", left - 8, c.py(t), tick_label(t, ya));
  svg += "</g>\n";
  svg += fmt::format("<g class=\"{}x-ticks\" text-anchor=\"middle\" fill=\"{}\">\n", prefix, kMutedColor);
  for (double t : xa.ticks)
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", c.px(t), bottom + 18, step_label(t, xa));
  svg += "</g>\n";
  svg += fmt::format("<rect class=\"{}frame\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"none\" stroke=\"#b0b0b0\"/>\n",
                     prefix, left, top, right - left, bottom - top);
  return svg;
}

struct LegendEntry {
  std::string label, svg_sample;  // the sample is drawn at the origin, 28 px wide, centred on y = 0
};

// The reward-margin panel between y = top and y = bottom: the train margins raw and smoothed as the loss is, the eval
// margins as markers, and a zero line (above it the policy prefers the chosen answers more than the reference does).
std::string margin_panel(const std::vector<Point>& train, const std::vector<Point>& eval, const Axis& xa, double left,
                         double right, double top_y, double bottom_y, double weight, size_t max_points) {
  const double top = top_y + 16, bottom = bottom_y - 44;
  double lo = 0, hi = 0;  // zero is always in view
  for (const auto* series : {&train, &eval})
    for (const auto& p : *series) lo = std::min(lo, p.y), hi = std::max(hi, p.y);
  const double pad = (hi - lo) * 0.04;
  const Axis ya = nice_axis(lo - pad, hi + pad, 4, false, false);
  const Canvas c(left, top, right, bottom, xa, ya);
  std::string svg = "<g class=\"margins-panel\">\n";
  svg += axes_svg(c, xa, ya, left, top, right, bottom, "margin-");
  svg += fmt::format("<line class=\"margin-zero\" x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"#999999\"/>\n",
                     left, c.py(0), right);
  svg += fmt::format(
      "<text class=\"margin-label\" x=\"0\" y=\"0\" text-anchor=\"middle\" font-size=\"13\" "
      "transform=\"translate(20,{:.1f}) rotate(-90)\">reward margin</text>\n",
      (top + bottom) / 2);
  svg += fmt::format("<text class=\"margin-x-label\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" font-size=\"13\">step</text>\n",
                     (left + right) / 2, bottom_y - 8);
  std::string latest;
  if (!train.empty()) {
    svg += fmt::format("<polyline class=\"train-margin\" fill=\"none\" stroke=\"{}\" stroke-opacity=\"0.3\" "
                       "stroke-width=\"1\" points=\"{}\"/>\n",
                       kMarginColor, c.points(thin(train, max_points, xa.lo, xa.hi)));
    const auto smooth = ema(train, weight);
    svg += fmt::format("<polyline class=\"train-margin-ema\" fill=\"none\" stroke=\"{}\" stroke-width=\"2.2\" "
                       "points=\"{}\"/>\n",
                       kMarginColor, c.points(thin(smooth, max_points, xa.lo, xa.hi)));
    latest = fmt::format("train margin {} (smoothed {})", format_loss(train.back().y), format_loss(smooth.back().y));
  }
  if (!eval.empty()) {
    svg += fmt::format("<g class=\"eval-margin-markers\" fill=\"#ffffff\" stroke=\"{}\" stroke-width=\"1.6\">\n", kEvalColor);
    for (const auto& p : thin(eval, max_points / 4, xa.lo, xa.hi))
      svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\"/>\n", c.px(p.x), c.py(p.y));
    svg += "</g>\n";
    latest += fmt::format("{}eval margin {}", latest.empty() ? "" : " · ", format_loss(eval.back().y));
  }
  svg += fmt::format("<text class=\"margin-subtitle\" x=\"{:.1f}\" y=\"{:.1f}\" fill=\"{}\">rewards/margins: {}</text>\n",
                     left, top - 4, kMutedColor, xml_escape(latest));
  return svg + "</g>\n";
}

}  // namespace

double default_ema_weight(size_t points) {
  // A window (1 / (1 - w) points) of about 1/40 of the run: long enough to show the trend through batch noise,
  // short enough that the trend does not visibly lag a falling loss. Capped at 0.99 (a 100-point window).
  if (points == 0) return 0.6;
  return std::clamp(1.0 - 40.0 / static_cast<double>(points), 0.6, 0.99);
}

std::string loss_plot_svg(const std::vector<MetricRecord>& records, const std::string& title,
                          const LossPlotOptions& options) {
  const double W = std::max(options.width, 320), H = std::max(options.height, 240);
  const double right = W - 24, top = 66, bottom = H - 56;

  const auto train = metric_points(records, "train", "loss");
  const auto eval = metric_points(records, "eval", "loss");
  // A preference run (DPO, ORPO, SimPO, KTO) logs TRL's rewards/margins: a panel under the loss shows it, since the
  // loss alone does not say whether chosen answers pull away from rejected ones.
  const auto margins = metric_points(records, "train", "rewards/margins");
  const auto eval_margins = metric_points(records, "eval", "rewards/margins");
  const double panel = margins.empty() && eval_margins.empty() ? 0 : kMarginPanelHeight;
  const double weight =
      options.ema_weight >= 0 && options.ema_weight < 1 ? options.ema_weight : default_ema_weight(train.size());
  const auto smooth = ema(train, weight);

  double x_min = std::numeric_limits<double>::infinity(), x_max = -x_min, y_min = x_min, y_max = -x_min;
  for (const auto* series : {&train, &eval})
    for (const auto& p : *series) {
      x_min = std::min(x_min, p.x), x_max = std::max(x_max, p.x);
      y_min = std::min(y_min, p.y), y_max = std::max(y_max, p.y);
    }
  const bool empty = train.empty() && eval.empty();
  if (empty) x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  const double y_pad = (y_max - y_min) * 0.04;  // keep the extremes off the frame
  const Axis xa = nice_axis(x_min, x_max, 8, true, x_min >= 0);
  const Axis ya = nice_axis(y_min - y_pad, y_max + y_pad, 6, false, y_min >= 0);
  // The left margin makes room for the longest y tick label (a tiny range needs many digits) and the axis title.
  size_t widest_label = 0;
  for (double t : ya.ticks) widest_label = std::max(widest_label, tick_label(t, ya).size());
  const double left = std::max(76.0, 40 + 7.4 * static_cast<double>(widest_label));
  const Canvas c(left, top, right, bottom, xa, ya);
  const size_t max_points = static_cast<size_t>(std::max(options.max_points_per_series, 4));

  std::string svg;
  svg += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  svg += fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\" fill=\"{2}\">\n",
      W, H + panel, kTextColor);
  svg += fmt::format("<rect class=\"background\" x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>\n", W,
                     H + panel);

  // Title, and a subtitle with the latest values: what someone glancing at the file wants to know.
  svg += fmt::format("<text class=\"title\" x=\"{:.1f}\" y=\"26\" font-size=\"16\" font-weight=\"bold\">{}</text>\n", left,
                     xml_escape(title));
  std::string latest;
  if (!train.empty())
    latest += fmt::format("step {} · train loss {} (smoothed {})", static_cast<long long>(train.back().x),
                          format_loss(train.back().y), format_loss(smooth.back().y));
  if (!eval.empty()) {
    // The eval record's own perplexity when it logged one, else exp(loss) (the loss is a mean NLL in nats).
    std::optional<double> ppl;
    for (const auto& r : records)
      if (r.kind == "eval" && r.step == static_cast<int64_t>(eval.back().x)) ppl = r.value("perplexity");
    if (!ppl || !std::isfinite(*ppl)) ppl = std::exp(eval.back().y);
    latest += fmt::format("{}eval loss {} at step {}", latest.empty() ? "" : " · ", format_loss(eval.back().y),
                          static_cast<long long>(eval.back().x));
    if (std::isfinite(*ppl)) latest += fmt::format(" (ppl {:.4g})", *ppl);  // exp() of a diverged loss overflows
  }
  if (!latest.empty())
    svg += fmt::format("<text class=\"subtitle\" x=\"{:.1f}\" y=\"46\" fill=\"{}\">{}</text>\n", left, kMutedColor,
                       xml_escape(latest));

  // Grid and tick labels.
  svg += axes_svg(c, xa, ya, left, top, right, bottom, "");
  svg += fmt::format("<text class=\"x-label\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" font-size=\"13\">step</text>\n",
                     (left + right) / 2, H - 14);
  svg += fmt::format(
      "<text class=\"y-label\" x=\"0\" y=\"0\" text-anchor=\"middle\" font-size=\"13\" "
      "transform=\"translate(20,{:.1f}) rotate(-90)\">loss</text>\n",
      (top + bottom) / 2);

  // Series: the raw train loss faint underneath, its trend on top, eval above both.
  std::vector<LegendEntry> legend;
  if (!train.empty()) {
    svg += fmt::format(
        "<polyline class=\"train-loss\" fill=\"none\" stroke=\"{}\" stroke-opacity=\"0.3\" stroke-width=\"1\" "
        "stroke-linejoin=\"round\" points=\"{}\"/>\n",
        kTrainColor, c.points(thin(train, max_points, xa.lo, xa.hi)));
    svg += fmt::format(
        "<polyline class=\"train-loss-ema\" fill=\"none\" stroke=\"{}\" stroke-width=\"2.2\" stroke-linejoin=\"round\" "
        "stroke-linecap=\"round\" points=\"{}\"/>\n",
        kTrainColor, c.points(thin(smooth, max_points, xa.lo, xa.hi)));
    if (train.size() == 1)  // a one-point line draws nothing
      svg += fmt::format("<circle class=\"train-point\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\"/>\n",
                         c.px(train[0].x), c.py(train[0].y), kTrainColor);
    legend.push_back({"train loss", fmt::format("<line x1=\"0\" y1=\"0\" x2=\"28\" y2=\"0\" stroke=\"{}\" "
                                                "stroke-opacity=\"0.3\" stroke-width=\"1.5\"/>",
                                                kTrainColor)});
    legend.push_back({fmt::format("train loss, smoothed (EMA {:.2f})", weight),
                      fmt::format("<line x1=\"0\" y1=\"0\" x2=\"28\" y2=\"0\" stroke=\"{}\" stroke-width=\"2.2\"/>",
                                  kTrainColor)});
  }
  if (!eval.empty()) {
    svg += fmt::format(
        "<polyline class=\"eval-loss\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" stroke-linejoin=\"round\" "
        "points=\"{}\"/>\n",
        kEvalColor, c.points(thin(eval, max_points, xa.lo, xa.hi)));
    const auto marked = thin(eval, max_points / 4, xa.lo, xa.hi);  // markers need more room than a line
    svg += fmt::format("<g class=\"eval-markers\" fill=\"#ffffff\" stroke=\"{}\" stroke-width=\"1.6\">\n", kEvalColor);
    for (const auto& p : marked) svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\"/>\n", c.px(p.x), c.py(p.y));
    svg += "</g>\n";
    legend.push_back({"eval loss", fmt::format("<line x1=\"0\" y1=\"0\" x2=\"28\" y2=\"0\" stroke=\"{0}\" "
                                               "stroke-width=\"1.6\"/><circle cx=\"14\" cy=\"0\" r=\"3.5\" "
                                               "fill=\"#ffffff\" stroke=\"{0}\" stroke-width=\"1.6\"/>",
                                               kEvalColor)});
  }
  if (empty)
    svg += fmt::format("<text class=\"no-data\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" fill=\"{}\" "
                       "font-size=\"14\">no loss logged yet</text>\n",
                       (left + right) / 2, (top + bottom) / 2, kMutedColor);

  // Legend in the top-right corner, where a falling loss curve usually leaves room.
  if (!legend.empty()) {
    size_t longest = 0;
    for (const auto& e : legend) longest = std::max(longest, e.label.size());
    const double row = 18, box_w = 28 + 8 + 6.6 * static_cast<double>(longest) + 14, box_h = row * legend.size() + 10;
    const double bx = right - box_w - 10, by = top + 10;
    svg += fmt::format("<g class=\"legend\" transform=\"translate({:.1f},{:.1f})\">\n", bx, by);
    svg += fmt::format("<rect x=\"0\" y=\"0\" width=\"{:.1f}\" height=\"{:.1f}\" rx=\"4\" fill=\"#ffffff\" "
                       "fill-opacity=\"0.9\" stroke=\"#cccccc\"/>\n",
                       box_w, box_h);
    for (size_t i = 0; i < legend.size(); ++i) {
      const double y = 5 + row * (static_cast<double>(i) + 0.5);
      svg += fmt::format("<g transform=\"translate(8,{:.1f})\">{}<text x=\"36\" y=\"0\" dy=\"0.35em\">{}</text></g>\n", y,
                         legend[i].svg_sample, xml_escape(legend[i].label));
    }
    svg += "</g>\n";
  }
  if (panel > 0) svg += margin_panel(margins, eval_margins, xa, left, right, H, H + panel, weight, max_points);
  svg += "</svg>\n";
  return svg;
}

void write_loss_plot(const std::string& svg_path, const std::vector<MetricRecord>& records, const std::string& title,
                     const LossPlotOptions& options) {
  io::write_text_atomically(svg_path, loss_plot_svg(records, title, options));
}

}  // namespace qtune::train
