//! Pictures a run leaves in its directory and the sample commands write, drawn with `plotters` into an
//! RGB buffer and written as PNG: loss curves against steps, sample grids scaled up to a viewable size
//! (nearest-neighbour) with per-row labels, and 2-D scatter plots with axes and the true modes marked.
//! The GAN and diffusion share every one of them.
//!
//! Text (axis numbers, legends, row labels) needs a font: none is shipped; the first of `$TIGEL_FONT`
//! and a few usual system fonts (DejaVu Sans, Liberation Sans, Arial) that exists is used. Without one
//! the pictures carry no text: axes keep their grid lines, row labels become a coloured square per row
//! in [`PALETTE`] order (class 0 first), and docs/metrics.md says which colour is which curve.

use std::path::Path;
use std::sync::OnceLock;

/// Points in chart coordinates.
type Points = Vec<(f64, f64)>;

use plotters::prelude::*;

use crate::data::images::{grid_u8, write_png_u8};
use crate::error::{Error, Result};

/// The colour of each curve, and of each row marker when no font is found (class k takes entry k mod 10).
pub const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Sample pictures are scaled up (by a whole factor) to at least this many pixels wide.
pub const MIN_WIDTH: usize = 256;

/// Whether a font was found and registered (looked for once).
pub fn has_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let mut paths: Vec<std::path::PathBuf> = std::env::var_os("TIGEL_FONT").map(Into::into).into_iter().collect();
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
            "/Library/Fonts/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ] {
            paths.push(p.into());
        }
        paths.iter().filter_map(|p| std::fs::read(p).ok()).any(|bytes| {
            // Registered once for the process's life, so the bytes live as long.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid("plot", format!("{}: {e}", path.display()))
}

fn colour(k: usize) -> RGBColor {
    let (r, g, b) = PALETTE[k % PALETTE.len()];
    RGBColor(r, g, b)
}

/// One curve of a loss plot.
#[derive(Clone, Debug)]
pub struct Curve {
    /// Its legend text.
    pub label: String,
    /// (step, value) points; non-finite values are left out.
    pub points: Vec<(f64, f64)>,
    /// Dots at the points (sparse curves, e.g. evaluations) rather than a line only.
    pub dots: bool,
}

impl Curve {
    /// The values of `key` in the metrics lines of `kind` ("train" or "eval") in `history`, against `step`.
    pub fn from_metrics(history: &crate::run::History, kind: &str, key: &str, label: &str, dots: bool) -> Curve {
        Curve { label: label.to_string(), points: history.points(kind, key), dots }
    }
}

/// Writes a line plot of `curves` against steps (640×400, y from the data's range) to `path`, curve k
/// in [`PALETTE`] colour k. Curves with no points are skipped; nothing to draw writes nothing.
pub fn line_plot(path: &Path, y_label: &str, curves: &[Curve]) -> Result<()> {
    let all: Vec<(f64, f64)> = curves.iter().flat_map(|c| c.points.iter().copied()).collect();
    if all.is_empty() {
        return Ok(());
    }
    let fold = |f: fn(&(f64, f64)) -> f64| {
        all.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |m, v| (m.0.min(v), m.1.max(v)))
    };
    let (x0, x1) = fold(|p| p.0);
    let (y0, y1) = fold(|p| p.1);
    let pad = ((y1 - y0) * 0.05).max(1e-6 * y1.abs().max(1.0));
    let (x0, x1) = (x0.min(0.0), if x1 > x0 { x1 } else { x0 + 1.0 });
    let (w, h) = (640usize, 400usize);
    let font = has_font();
    let mut buf = vec![255u8; w * h * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w as u32, h as u32)).into_drawing_area();
        let e = |e| plot_err(path, e);
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(28)
            .x_label_area_size(if font { 36 } else { 0 })
            .y_label_area_size(if font { 56 } else { 0 })
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(e)?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(WHITE.mix(0.0)).bold_line_style(BLACK.mix(0.12));
        if font {
            mesh.x_desc("step")
                .y_desc(y_label)
                .label_style(("sans-serif", 13))
                .x_label_formatter(&|x| format!("{x:.0}"));
        }
        mesh.draw().map_err(e)?;
        for (k, c) in curves.iter().enumerate().filter(|(_, c)| !c.points.is_empty()) {
            let style = colour(k).stroke_width(2);
            let series = chart.draw_series(LineSeries::new(c.points.clone(), style)).map_err(e)?;
            if font {
                series.label(c.label.as_str()).legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
            }
            if c.dots {
                chart.draw_series(c.points.iter().map(|&p| Circle::new(p, 3, colour(k).filled()))).map_err(e)?;
            }
        }
        if font {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    write_png_u8(path, w, h, 3, &buf)
}

/// Writes `n` images (NCHW in [-1, 1], `c` 1 or 3) as a grid of `cols` a row, scaled up by the smallest
/// whole factor that makes it at least [`MIN_WIDTH`] pixels wide. `row_labels` (one per row, or empty)
/// are written left of the rows, or shown as coloured squares without a font.
#[allow(clippy::too_many_arguments)]
pub fn sample_grid(
    path: &Path,
    pixels: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    cols: usize,
    row_labels: &[String],
) -> Result<()> {
    let (gw, gh, grid) = grid_u8(path, pixels, n, c, h, w, cols)?;
    let s = MIN_WIDTH.div_ceil(gw).max(1);
    let margin = if row_labels.is_empty() { 0 } else { 36 };
    let (ow, oh) = (margin + gw * s, gh * s);
    let mut buf = vec![255u8; ow * oh * 3];
    for y in 0..oh {
        for x in 0..gw * s {
            let at = ((y / s) * gw + x / s) * c;
            let px = if c == 1 { [grid[at]; 3] } else { [grid[at], grid[at + 1], grid[at + 2]] };
            let o = (y * ow + margin + x) * 3;
            buf[o..o + 3].copy_from_slice(&px);
        }
    }
    if !row_labels.is_empty() {
        let font = has_font();
        let root = BitMapBackend::with_buffer(&mut buf, (ow as u32, oh as u32)).into_drawing_area();
        let e = |e| plot_err(path, e);
        for (r, label) in row_labels.iter().enumerate() {
            let mid = (r * (h + 1) * s + h * s / 2) as i32;
            if font {
                let style = ("sans-serif", 16).into_font().color(&BLACK);
                root.draw(&Text::new(label.as_str(), (4, mid - 8), style)).map_err(e)?;
            } else {
                root.draw(&Rectangle::new([(8, mid - 8), (24, mid + 8)], colour(r).filled())).map_err(e)?;
            }
        }
        root.present().map_err(e)?;
    }
    write_png_u8(path, ow, oh, 3, &buf)
}

/// Writes 2-D point sets as scatter plots side by side (`side` pixels square each) covering
/// [-extent, extent]², with axes, the true modes as red crosses, and points outside the frame drawn
/// on its edge as orange triangles (so a sample that flew off is seen, not lost).
pub fn scatter(path: &Path, sets: &[&[f32]], extent: f32, modes: &[[f32; 2]], side: usize) -> Result<()> {
    if sets.is_empty() || side < 64 || !(extent.is_finite() && extent > 0.0) {
        return Err(plot_err(path, format!("nothing to draw: {} sets, {side} px, extent {extent}", sets.len())));
    }
    let (w, h) = (side * sets.len(), side);
    let font = has_font();
    let e = |e| plot_err(path, e);
    let mut buf = vec![255u8; w * h * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w as u32, h as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let ext = extent as f64;
        for (panel, set) in root.split_evenly((1, sets.len())).iter().zip(sets) {
            let mut chart = ChartBuilder::on(panel)
                .margin(8)
                .x_label_area_size(if font { 24 } else { 0 })
                .y_label_area_size(if font { 36 } else { 0 })
                .build_cartesian_2d(-ext..ext, -ext..ext)
                .map_err(e)?;
            let mut mesh = chart.configure_mesh();
            mesh.light_line_style(WHITE.mix(0.0)).bold_line_style(BLACK.mix(0.1)).x_labels(5).y_labels(5);
            if font {
                mesh.label_style(("sans-serif", 12));
            }
            mesh.draw().map_err(e)?;
            // The axes through the origin.
            let axis = BLACK.mix(0.4);
            chart.draw_series(LineSeries::new([(-ext, 0.0), (ext, 0.0)], axis)).map_err(e)?;
            chart.draw_series(LineSeries::new([(0.0, -ext), (0.0, ext)], axis)).map_err(e)?;
            let inside = |v: f64| (-ext..=ext).contains(&v);
            let (pts, out): (Points, Points) =
                set.chunks_exact(2).map(|p| (p[0] as f64, p[1] as f64)).partition(|p| inside(p.0) && inside(p.1));
            let blue = colour(0).mix(0.55);
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 1, blue.filled()))).map_err(e)?;
            let clamp = |v: f64| if v.is_nan() { 0.0 } else { v.clamp(-ext, ext) };
            chart
                .draw_series(out.iter().map(|p| TriangleMarker::new((clamp(p.0), clamp(p.1)), 4, colour(1).filled())))
                .map_err(e)?;
            chart
                .draw_series(modes.iter().map(|m| Cross::new((m[0] as f64, m[1] as f64), 5, colour(3).stroke_width(2))))
                .map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    write_png_u8(path, w, h, 3, &buf)
}

/// The true modes of the 2-D mixture `data` names (ring8, grid25), none for other data.
pub fn mixture_modes(data: &str) -> Vec<[f32; 2]> {
    crate::data::mixture::Mixture::parse(data).map(|m| m.modes()).unwrap_or_default()
}

/// The half-width of a scatter plot of data with these modes: 1.5 × the farthest mode coordinate (the
/// data and a margin), or `fallback` without modes.
pub fn scatter_extent(modes: &[[f32; 2]], fallback: f32) -> f32 {
    let far = modes.iter().flat_map(|m| [m[0].abs(), m[1].abs()]).fold(0f32, f32::max);
    if far > 0.0 {
        1.5 * far
    } else {
        fallback
    }
}
