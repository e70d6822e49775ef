//! The `--plot FILE.svg` picture: two panels over the run's seconds, one
//! colour per transaction type.
//!
//! ```text
//!   ┌ throughput (ops/s) ───────────────┐   one line per type
//!   ├ latency (ms, log scale) ──────────┤   p99 solid, p50 dashed
//!   └───────────────── elapsed (s) ─────┘   warm-up shaded grey
//! ```
//!
//! Only the SVG backend is built in (no fonts or bitmap encoders to
//! compile); a `.png` path is refused with a message saying so.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::stats::Second;

/// Refuses paths this build cannot draw to.
pub fn check_path(path: &Path) -> Result<()> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
    {
        Some(e) if e == "svg" => Ok(()),
        other => Err(Error::Usage(format!(
            "--plot {}: only SVG output is built in (got {}); use a .svg file name \
             and convert it (e.g. rsvg-convert -o plot.png plot.svg)",
            path.display(),
            other.map_or("no extension".to_string(), |e| format!(".{e}"))
        ))),
    }
}

fn plot_err(e: impl std::fmt::Debug) -> Error {
    Error::Plot(format!("{e:?}"))
}

fn color(i: usize) -> RGBColor {
    // Distinct, readable on white.
    const COLORS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(23, 190, 207),
    ];
    COLORS[i % COLORS.len()]
}

/// Draws throughput and p50/p99 latency per type over time into `path`.
pub fn draw(path: &Path, title: &str, names: &[String], seconds: &[Second]) -> Result<()> {
    check_path(path)?;
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(plot_err)?;
    let (top, bottom) = root.split_vertically(430);

    let x_max = seconds.last().map_or(1.0, |s| s.elapsed_s).max(1.0);
    let warmup_end = seconds
        .iter()
        .filter(|s| s.warmup)
        .map(|s| s.elapsed_s)
        .fold(0.0f64, f64::max);

    // Throughput.
    let ops_max = seconds
        .iter()
        .flat_map(|s| s.kinds.iter().map(|k| k.ops_per_s))
        .fold(0.0f64, f64::max)
        .max(1.0)
        // Headroom for the legend in the upper right corner.
        * 1.4;
    let mut chart = ChartBuilder::on(&top)
        .caption("throughput per type (ops/s)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..ops_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("elapsed (s)")
        .y_desc("ops/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()
        .map_err(plot_err)?;
    if warmup_end > 0.0 {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (warmup_end, ops_max)],
                RGBColor(235, 235, 235).filled(),
            )))
            .map_err(plot_err)?;
    }
    for (i, name) in names.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                seconds
                    .iter()
                    .filter_map(|s| s.kinds.get(i).map(|k| (s.elapsed_s, k.ops_per_s))),
                c.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_err)?;

    // Latency, log scale: p50 and p99 differ by orders of magnitude.
    let lat = |v: f64| v.max(0.01);
    let (mut lo, mut hi) = (f64::MAX, 0.0f64);
    for s in seconds {
        for k in s.kinds.iter().filter(|k| k.ops > 0) {
            lo = lo.min(lat(k.p50_ms));
            hi = hi.max(lat(k.p99_ms));
        }
    }
    if hi <= 0.0 {
        (lo, hi) = (0.1, 10.0);
    }
    // Headroom above for the legend (a factor on a log axis).
    let (lo, hi) = (lo / 1.5, hi * 6.0);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "latency per type (ms, log scale): p99 solid, p50 dashed",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (lo..hi).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("elapsed (s)")
        .y_desc("ms")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()
        .map_err(plot_err)?;
    if warmup_end > 0.0 {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, lo), (warmup_end, hi)],
                RGBColor(235, 235, 235).filled(),
            )))
            .map_err(plot_err)?;
    }
    for (i, name) in names.iter().enumerate() {
        let c = color(i);
        // Seconds without a completed transaction have no latency: the
        // line is broken there rather than drawn down to zero.
        let points = |p99: bool| -> Vec<Vec<(f64, f64)>> {
            let mut runs = vec![Vec::new()];
            for s in seconds {
                match s.kinds.get(i) {
                    Some(k) if k.ops > 0 => {
                        let v = if p99 { k.p99_ms } else { k.p50_ms };
                        if let Some(run) = runs.last_mut() {
                            run.push((s.elapsed_s, lat(v)));
                        }
                    }
                    _ => runs.push(Vec::new()),
                }
            }
            runs.retain(|r| !r.is_empty());
            runs
        };
        for (n, run) in points(true).into_iter().enumerate() {
            let series = chart
                .draw_series(LineSeries::new(run, c.stroke_width(2)))
                .map_err(plot_err)?;
            if n == 0 {
                series.label(format!("{name} p99")).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            }
        }
        for run in points(false) {
            chart
                .draw_series(DashedLineSeries::new(run, 6, 4, c.stroke_width(1)))
                .map_err(plot_err)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::KindSecond;

    #[test]
    fn only_svg_paths_are_accepted() {
        assert!(check_path(Path::new("a/b.svg")).is_ok());
        assert!(check_path(Path::new("b.SVG")).is_ok());
        let e = check_path(Path::new("b.png")).unwrap_err().to_string();
        assert!(e.contains("only SVG") && e.contains(".png"), "{e}");
        assert!(check_path(Path::new("b")).is_err());
    }

    #[test]
    fn a_plot_is_written_with_both_panels_and_every_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let k = |ops: u64, ms: f64| KindSecond {
            ops,
            ops_per_s: ops as f64,
            p50_ms: ms,
            p95_ms: ms * 2.0,
            p99_ms: ms * 3.0,
            max_ms: ms * 4.0,
            retries: 0,
            errors: 0,
        };
        let seconds: Vec<Second> = (1..=10)
            .map(|t| Second {
                elapsed_s: t as f64,
                warmup: t <= 2,
                // "b" is idle in second 5: its latency line breaks there.
                kinds: vec![k(100 + t, 2.0), k(if t == 5 { 0 } else { 10 }, 30.0)],
            })
            .collect();
        draw(&path, "test", &["alpha".into(), "beta".into()], &seconds).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in ["throughput", "latency", "alpha", "beta p99"] {
            assert!(svg.contains(text), "missing {text}");
        }
        // An empty run still draws (axes only) instead of failing.
        draw(&path, "empty", &["alpha".into()], &[]).unwrap();
    }
}
