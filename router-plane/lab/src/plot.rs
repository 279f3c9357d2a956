//! The one SVG plotter of the lab's reports (eval's quality curves, the simulator's
//! quality–cost and goodput plots): lines or points per series on linear axes that fit
//! the data, a legend, and labelled marks. Plain text, no dependencies; the numbers
//! behind every plot are in the report beside it.

use std::fmt::Write as _;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A line through the points, in order.
    Line,
    /// A dashed line (a reference such as random routing).
    Dashed,
    /// A line with a dot on every point.
    LinePoints,
    /// Dots only.
    Points,
}

/// One named series.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, style: Style) -> Self {
        Self {
            name: name.into(),
            points,
            style,
        }
    }
}

/// A labelled black dot, e.g. a single tier's own cost and quality.
#[derive(Debug, Clone)]
pub struct Mark {
    pub at: (f64, f64),
    pub label: String,
}

/// A plot: title, axis labels, series and marks.
#[derive(Debug, Clone, Default)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub marks: Vec<Mark>,
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#888888",
];
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 420.0;
const MARGIN: f64 = 70.0;

/// The lowest and highest of `values`, widened by 5 % each way (and to a unit span around
/// a single value; [0, 1] for none).
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// Text for SVG: the five characters XML reserves, escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

impl Plot {
    /// The plot as a standalone SVG document.
    pub fn svg(&self) -> String {
        let (w, h, m) = (WIDTH, HEIGHT, MARGIN);
        let all = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().copied())
                .chain(self.marks.iter().map(|k| k.at))
        };
        let (x0, x1) = range(all().map(|p| p.0));
        let (y0, y1) = range(all().map(|p| p.1));
        let px = |x: f64| m + (x - x0) / (x1 - x0) * (w - 2.0 * m);
        let py = |y: f64| h - m - (y - y0) / (y1 - y0) * (h - 2.0 * m);
        let mut s = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="20" text-anchor="middle" font-size="14">{}</text><line x1="{m}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{}" stroke="black"/><text x="{}" y="{}" text-anchor="middle">{}</text><text x="15" y="{}" transform="rotate(-90 15 {})" text-anchor="middle">{}</text>"#,
            w / 2.0,
            escape(&self.title),
            h - m,
            w - m,
            h - m,
            h - m,
            w / 2.0,
            h - 15.0,
            escape(&self.x_label),
            h / 2.0,
            h / 2.0,
            escape(&self.y_label),
        );
        // Fewer decimals for larger numbers, so tick labels stay inside the margin.
        let digits = |span: f64| {
            if span >= 100.0 {
                0
            } else if span >= 1.0 {
                2
            } else {
                3
            }
        };
        let (dx, dy) = (digits(x1 - x0), digits(y1 - y0));
        for k in 0..=4 {
            let fx = x0 + (x1 - x0) * f64::from(k) / 4.0;
            let fy = y0 + (y1 - y0) * f64::from(k) / 4.0;
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{fx:.dx$}</text><text x="{}" y="{:.1}" text-anchor="end">{fy:.dy$}</text>"#,
                px(fx),
                h - m + 15.0,
                m - 5.0,
                py(fy) + 4.0
            );
        }
        for (k, series) in self.series.iter().enumerate() {
            let c = COLOURS[k % COLOURS.len()];
            let line = match series.style {
                Style::Line | Style::LinePoints => Some(""),
                Style::Dashed => Some(r#" stroke-dasharray="6 4""#),
                Style::Points => None,
            };
            if let Some(dash) = line.filter(|_| series.points.len() > 1) {
                let path: Vec<String> = series
                    .points
                    .iter()
                    .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                    .collect();
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{}"/>"#,
                    path.join(" ")
                );
            }
            if matches!(series.style, Style::LinePoints | Style::Points) || series.points.len() == 1
            {
                for &(x, y) in &series.points {
                    let _ = write!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{c}"/>"#,
                        px(x),
                        py(y)
                    );
                }
            }
            let _ = write!(
                s,
                r#"<rect x="{}" y="{}" width="10" height="10" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
                w - m - 170.0,
                m + 16.0 * k as f64,
                w - m - 155.0,
                m + 9.0 + 16.0 * k as f64,
                escape(&series.name)
            );
        }
        for mark in &self.marks {
            let (x, y) = (px(mark.at.0), py(mark.at.1));
            // Labels sit inside the plot: right of a dot in the left half, left of it in
            // the right half.
            let anchor = if x > w / 2.0 { "end" } else { "start" };
            let dx = if x > w / 2.0 { -6.0 } else { 6.0 };
            let _ = write!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="black"/><text x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                x + dx,
                y - 6.0,
                escape(&mark.label)
            );
        }
        s.push_str("</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(svg: &str, what: &str) -> usize {
        svg.matches(what).count()
    }

    #[test]
    fn draws_each_style_and_keeps_every_point_inside_the_axes() {
        let plot = Plot {
            title: "quality & cost".into(),
            x_label: "share".into(),
            y_label: "quality".into(),
            series: vec![
                Series::new(
                    "ours",
                    vec![(0.0, 0.5), (0.5, 0.8), (1.0, 0.9)],
                    Style::Line,
                ),
                Series::new("random", vec![(0.0, 0.5), (1.0, 0.9)], Style::Dashed),
                Series::new("sweep", vec![(0.2, 0.6), (0.4, 0.7)], Style::LinePoints),
                Series::new("<policy>", vec![(0.3, 0.55)], Style::Points),
            ],
            marks: vec![Mark {
                at: (1.0, 0.9),
                label: "always top".into(),
            }],
        };
        let svg = plot.svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(count(&svg, "<polyline"), 3, "three line styles");
        assert_eq!(count(&svg, "stroke-dasharray"), 1);
        // Two points of the sweep, the scatter's one, the mark's.
        assert_eq!(count(&svg, "<circle"), 4);
        assert!(svg.contains("quality &amp; cost") && svg.contains("&lt;policy&gt;"));
        // Every coordinate lies within the plotting area.
        for circle in svg.split("<circle").skip(1) {
            let num = |key: &str| -> f64 {
                let at = circle.find(key).expect("attribute") + key.len();
                circle[at..]
                    .split('"')
                    .next()
                    .expect("value")
                    .parse()
                    .expect("number")
            };
            let (x, y) = (num("cx=\""), num("cy=\""));
            assert!((MARGIN..=WIDTH - MARGIN).contains(&x), "{x}");
            assert!((MARGIN..=HEIGHT - MARGIN).contains(&y), "{y}");
        }
    }

    #[test]
    fn an_empty_or_flat_plot_has_finite_axes() {
        for series in [
            vec![],
            vec![Series::new("one", vec![(2.0, 3.0)], Style::Points)],
        ] {
            let svg = Plot {
                series,
                ..Plot::default()
            }
            .svg();
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }
}
