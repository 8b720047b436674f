#pragma once
// The loss curve of a run as a self-contained SVG (no scripts, no external fonts or files), so it opens in any
// browser or image viewer and can be attached to a report: train loss as a thin line plus its smoothed trend
// (debiased EMA, as TensorBoard smooths), eval loss as markers joined by a line, against the optimizer step. A
// preference run's records carry rewards/margins: a second panel under the loss plots them, against the same steps.
#include <string>
#include <vector>

#include "qtune/train/metrics_log.h"

namespace qtune::train {

struct LossPlotOptions {
  int width = 860;   // pixels
  int height = 500;
  // Train-loss smoothing weight in [0, 1); negative picks one from the number of points (more points, smoother).
  double ema_weight = -1;
  // A long run is thinned to at most this many points per line, keeping each pixel column's min and max so
  // spikes stay visible; the SVG stays small however many steps were logged.
  int max_points_per_series = 2000;
};

// The SVG text. Uses records of kind "train" and "eval" (their "loss" value); NaN/inf losses are skipped.
// Copes with no records, no eval records, a single point and all-equal values. `title` is escaped.
std::string loss_plot_svg(const std::vector<MetricRecord>& records, const std::string& title,
                          const LossPlotOptions& options = {});

// loss_plot_svg written atomically to `svg_path` (a viewer refreshing the file never sees half of it).
void write_loss_plot(const std::string& svg_path, const std::vector<MetricRecord>& records, const std::string& title,
                     const LossPlotOptions& options = {});

// The smoothing weight used when LossPlotOptions::ema_weight is negative, for `points` train points.
double default_ema_weight(size_t points);

}  // namespace qtune::train
