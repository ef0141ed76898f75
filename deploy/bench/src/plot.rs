//! PNG plots with plotters' bitmap backend. Text needs a TrueType font: one
//! from Debian's fonts-dejavu-core is read from disk (nothing is fetched);
//! without it the plots are drawn with lines and grid only.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::error::{BenchError, Result};
use crate::stats::Series;

const SIZE: (u32, u32) = (1000, 500);
const FAMILY: &str = "sans-serif";

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

static TEXT: OnceLock<bool> = OnceLock::new();

/// Registers the font once per process; returns whether text can be drawn.
pub fn init_font(explicit: Option<&Path>) -> bool {
    *TEXT.get_or_init(|| {
        let paths: Vec<PathBuf> = match explicit {
            Some(p) => vec![p.to_path_buf()],
            None => FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
        };
        paths.iter().any(|path| match std::fs::read(path) {
            // register_font keeps a 'static reference: the font lives as
            // long as the process, which is what a CLI run needs.
            Ok(bytes) => register_font(
                FAMILY,
                FontStyle::Normal,
                Box::leak(bytes.into_boxed_slice()),
            )
            .is_ok(),
            Err(_) => false,
        })
    })
}

fn text() -> bool {
    TEXT.get().copied().unwrap_or(false)
}

fn plot_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Plot(e.to_string())
}

struct Line<'a> {
    label: &'a str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

fn draw(path: &Path, title: &str, y_desc: &str, lines: &[Line<'_>]) -> Result<()> {
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(0.0_f64, f64::max)
        .max(0.1);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text() {
        builder
            .caption(title, (FAMILY, 22))
            .x_label_area_size(45)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    let x_fmt = |v: &f64| format!("{v:.1}");
    let y_fmt = |v: &f64| {
        if y_max >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    let mut mesh = chart.configure_mesh();
    if text() {
        mesh.x_desc("seconds since start")
            .y_desc(y_desc)
            .label_style((FAMILY, 14))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt);
    }
    mesh.draw().map_err(plot_err)?;
    for line in lines {
        let color = line.color;
        let series = chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?;
        if text() {
            series.label(line.label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    if text() {
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)
}

/// p50 / p90 / p99 of the requests started in each bucket.
pub fn latency(path: &Path, title: &str, series: &Series) -> Result<()> {
    let pick = |f: fn(&crate::stats::Point) -> f64| -> Vec<(f64, f64)> {
        series.points.iter().map(|p| (p.t_secs, f(p))).collect()
    };
    draw(
        path,
        title,
        "latency (ms)",
        &[
            Line {
                label: "p50",
                color: RGBColor(31, 119, 180),
                points: pick(|p| p.p50_ms),
            },
            Line {
                label: "p90",
                color: RGBColor(255, 127, 14),
                points: pick(|p| p.p90_ms),
            },
            Line {
                label: "p99",
                color: RGBColor(214, 39, 40),
                points: pick(|p| p.p99_ms),
            },
        ],
    )
}

/// Rows per second over the last second at each poll: order-service
/// commits in batches, so the difference between two polls alone jumps
/// between zero and a batch.
fn persisted_rate(polls: &[(f64, i64)]) -> Vec<(f64, f64)> {
    let mut from = 0;
    polls
        .iter()
        .enumerate()
        .skip(1)
        .filter_map(|(i, &(t, n))| {
            while from + 1 < i && t - polls[from + 1].0 >= 1.0 {
                from += 1;
            }
            let (t0, n0) = polls[from];
            (t > t0).then(|| (t, (n - n0) as f64 / (t - t0)))
        })
        .collect()
}

/// Answers per second, 2xx per second and, when measured, orders persisted
/// per second (the difference between two polls of the orders table).
pub fn throughput(
    path: &Path,
    title: &str,
    series: &Series,
    persisted: &[(f64, i64)],
) -> Result<()> {
    let mut lines = vec![
        Line {
            label: "responses/s",
            color: RGBColor(31, 119, 180),
            points: series.points.iter().map(|p| (p.t_secs, p.rps)).collect(),
        },
        Line {
            label: "2xx/s",
            color: RGBColor(44, 160, 44),
            points: series
                .points
                .iter()
                .map(|p| (p.t_secs, p.success_rps))
                .collect(),
        },
    ];
    if persisted.len() > 1 {
        let points = persisted_rate(persisted);
        lines.push(Line {
            label: "orders persisted/s",
            color: RGBColor(148, 103, 189),
            points,
        });
    }
    draw(path, title, "per second", &lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_rate_over_a_one_second_window() {
        // 500 rows every half second, polled every quarter second.
        let polls: Vec<(f64, i64)> = (0..=16)
            .map(|i| (i as f64 * 0.25, (i as i64 / 2) * 500))
            .collect();
        let rates = persisted_rate(&polls);
        assert_eq!(rates.len(), 16);
        for &(t, r) in &rates[4..] {
            assert!((r - 1000.0).abs() < 1e-9, "at {t}: {r}");
        }
    }
}
