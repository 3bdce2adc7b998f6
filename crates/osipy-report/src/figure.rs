//! The figures of a report, drawn into RGB buffers and encoded as PNG:
//! slice montages of maps with a colour bar, the quality mask with a
//! legend, line plots of curves and histograms.
//!
//! Montage pixels are written straight into the buffer (one pass over the
//! grid); text, axes and the colour bar's ticks are drawn by plotters with
//! the embedded DejaVu Sans, so figures look the same on every machine.

use ndarray::Array3;
use osipy_core::{OsipyError, QualityCode, Result};
use osipy_io::Plot;
use plotters::prelude::*;
use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
use plotters::style::FontStyle;
use std::sync::Once;

/// The font family registered for every figure.
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is valid TrueType; registration cannot fail.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// A rectangle in pixels: x, y of the top-left corner, width, height.
pub type Rect = (u32, u32, u32, u32);

/// An encoded figure with what its content checks need.
#[derive(Debug, Clone)]
pub struct Figure {
    /// PNG bytes.
    pub png: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Where the colour bar's gradient is (top = high end), if any.
    pub colorbar: Option<Rect>,
    /// Where the image tiles are (montages).
    pub tiles: Vec<Rect>,
}

/// Colour of a voxel outside the analysis mask.
pub const OUTSIDE: [u8; 3] = [0, 0, 0];
/// Colour of a voxel in the mask without a value (a failed fit).
pub const NO_VALUE: [u8; 3] = [110, 110, 110];
const BACKGROUND: [u8; 3] = [255, 255, 255];

fn plot_err(e: impl std::fmt::Display) -> OsipyError {
    OsipyError::Validation(format!("drawing a report figure failed: {e}"))
}

/// Viridis at `t` in [0, 1].
pub fn viridis(t: f64) -> [u8; 3] {
    let c: RGBColor = ViridisRGB.get_color_normalized(t.clamp(0.0, 1.0), 0.0, 1.0);
    [c.0, c.1, c.2]
}

/// Colour of each quality code in the quality figure (outside the mask:
/// black; valid codes green/teal; failures warm colours).
pub fn quality_color(q: QualityCode) -> [u8; 3] {
    match q {
        QualityCode::NotFitted => OUTSIDE,
        QualityCode::Converged => [46, 160, 67],
        QualityCode::AtBound => [80, 200, 200],
        QualityCode::MaxIterations => [255, 170, 0],
        QualityCode::NonFiniteInput => [150, 80, 200],
        QualityCode::Singular => [230, 60, 160],
        QualityCode::LowR2 => [240, 228, 66],
        QualityCode::ModelFailure => [200, 30, 30],
        QualityCode::InvalidSignal => [90, 120, 255],
    }
}

/// Slices (z) shown in a montage: those holding mask voxels (all when none
/// does), at most `max` of them, evenly spaced.
pub fn montage_slices(mask: &Array3<bool>, max: usize) -> Vec<usize> {
    let nz = mask.shape()[2];
    let mut with: Vec<usize> = (0..nz)
        .filter(|&z| mask.index_axis(ndarray::Axis(2), z).iter().any(|m| *m))
        .collect();
    if with.is_empty() {
        with = (0..nz).collect();
    }
    if with.len() <= max {
        return with;
    }
    (0..max)
        .map(|i| with[(i * (with.len() - 1) + (max - 1) / 2) / (max - 1).max(1)])
        .collect()
}

/// The pixel grid of a montage: tiles of `nx x ny` voxels scaled by an
/// integer factor, `cols` per row, below a title band.
struct Layout {
    scale: u32,
    cols: u32,
    rows: u32,
    tile: (u32, u32),
    gap: u32,
    top: u32,
    right: u32,
}

impl Layout {
    fn new(nx: usize, ny: usize, n: usize, right: u32) -> Layout {
        let side = nx.max(ny).max(1) as u32;
        let scale = (160 / side).clamp(1, 8);
        let cols = (n as u32).clamp(1, 4);
        Layout {
            scale,
            cols,
            rows: (n as u32).div_ceil(cols),
            tile: (nx as u32 * scale, ny as u32 * scale),
            gap: 6,
            top: 34,
            right,
        }
    }
    fn size(&self) -> (u32, u32) {
        let w = self.gap + self.cols * (self.tile.0 + self.gap) + self.right;
        let h = (self.top + self.rows * (self.tile.1 + self.gap) + self.gap).max(260);
        (w.max(460), h)
    }
    fn tile_origin(&self, i: usize) -> (u32, u32) {
        let (c, r) = (i as u32 % self.cols, i as u32 / self.cols);
        (
            self.gap + c * (self.tile.0 + self.gap),
            self.top + r * (self.tile.1 + self.gap),
        )
    }
}

/// Writes slice `z` of `color(x, y)` into tile `i` (x to the right, y up,
/// as radiological viewers show an axial slice of a RAS image).
fn blit(
    buf: &mut [u8],
    width: u32,
    layout: &Layout,
    i: usize,
    grid: [usize; 3],
    color: impl Fn(usize, usize) -> [u8; 3],
) {
    let (ox, oy) = layout.tile_origin(i);
    let s = layout.scale;
    for y in 0..grid[1] {
        for x in 0..grid[0] {
            let c = color(x, y);
            let py0 = oy + (grid[1] - 1 - y) as u32 * s;
            let px0 = ox + x as u32 * s;
            for py in py0..py0 + s {
                let row = (py * width) as usize * 3;
                for px in px0..px0 + s {
                    let k = row + px as usize * 3;
                    buf[k..k + 3].copy_from_slice(&c);
                }
            }
        }
    }
}

/// A montage being drawn: the pixels of its tiles are written, text and
/// decorations come next.
struct Montage {
    buf: Vec<u8>,
    layout: Layout,
    slices: Vec<usize>,
    tiles: Vec<Rect>,
    width: u32,
    height: u32,
}

impl Montage {
    /// Tiles of the slices of `mask` worth showing, each voxel coloured by
    /// `color(x, y, z)`, leaving `right` pixels for a colour bar or legend.
    fn new(
        grid: [usize; 3],
        mask: &Array3<bool>,
        right: u32,
        color: impl Fn(usize, usize, usize) -> [u8; 3],
    ) -> Montage {
        register_font();
        let slices = montage_slices(mask, 12);
        let layout = Layout::new(grid[0], grid[1], slices.len(), right);
        let (width, height) = layout.size();
        let mut buf = canvas(width, height);
        let mut tiles = Vec::new();
        for (i, &z) in slices.iter().enumerate() {
            blit(&mut buf, width, &layout, i, grid, |x, y| color(x, y, z));
            let (ox, oy) = layout.tile_origin(i);
            tiles.push((ox, oy, layout.tile.0, layout.tile.1));
        }
        Montage {
            buf,
            layout,
            slices,
            tiles,
            width,
            height,
        }
    }

    /// Draws the title, the slice labels and then `decorate`'s text and
    /// marks with plotters; encodes the figure.
    fn finish(
        mut self,
        title: &str,
        colorbar: Option<Rect>,
        decorate: impl FnOnce(
            &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
            &Layout,
            &[usize],
        ) -> Result<()>,
    ) -> Result<Figure> {
        {
            let root =
                BitMapBackend::with_buffer(&mut self.buf, (self.width, self.height)).into_drawing_area();
            root.draw_text(
                title,
                &(FONT, 16).into_font().color(&BLACK),
                (self.layout.gap as i32, 8),
            )
            .map_err(plot_err)?;
            let small = (FONT, 12).into_font();
            for (i, &z) in self.slices.iter().enumerate() {
                let (ox, oy) = self.layout.tile_origin(i);
                root.draw_text(
                    &format!("z={z}"),
                    &small.color(&WHITE),
                    (ox as i32 + 3, oy as i32 + 2),
                )
                .map_err(plot_err)?;
            }
            decorate(&root, &self.layout, &self.slices)?;
            root.present().map_err(plot_err)?;
        }
        Ok(Figure {
            png: encode(&self.buf, self.width, self.height)?,
            width: self.width,
            height: self.height,
            colorbar,
            tiles: self.tiles,
        })
    }
}

fn encode(buf: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header().map_err(plot_err)?;
    w.write_image_data(buf).map_err(plot_err)?;
    w.finish().map_err(plot_err)?;
    Ok(out)
}

fn canvas(width: u32, height: u32) -> Vec<u8> {
    BACKGROUND
        .iter()
        .copied()
        .cycle()
        .take((width * height * 3) as usize)
        .collect()
}

/// Tick values for `[lo, hi]`: about `n` round numbers inside it.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(hi > lo) || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A number for a tick label: short, without float noise.
pub fn fmt_num(v: f64) -> String {
    // Tick positions accumulate rounding error around zero (-5.6e-17).
    if v.abs() < 1e-12 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A map as a slice montage with a colour bar labelled in `unit`; values
/// are mapped linearly over `range` (clipped at its ends); `markers` are
/// voxels drawn as crosses with their labels.
pub fn map_montage(
    title: &str,
    unit: &str,
    values: &Array3<f64>,
    mask: &Array3<bool>,
    range: (f64, f64),
    markers: &[([usize; 3], String)],
) -> Result<Figure> {
    let s = values.shape();
    let grid = [s[0], s[1], s[2]];
    let (lo, hi) = range;
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut m = Montage::new(grid, mask, 130, |x, y, z| {
        let v = values[(x, y, z)];
        if !mask[(x, y, z)] {
            OUTSIDE
        } else if v.is_finite() {
            viridis((v - lo) / span)
        } else {
            NO_VALUE
        }
    });
    let (width, height) = (m.width, m.height);
    let bar = (
        width - m.layout.right + 24,
        m.layout.top + 8,
        18,
        height - m.layout.top - 40,
    );
    for row in 0..bar.3 {
        let c = viridis(1.0 - row as f64 / (bar.3 - 1).max(1) as f64);
        for px in bar.0..bar.0 + bar.2 {
            let k = (((bar.1 + row) * width + px) * 3) as usize;
            m.buf[k..k + 3].copy_from_slice(&c);
        }
    }
    m.finish(title, Some(bar), |root, layout, slices| {
        let small = (FONT, 12).into_font();
        for t in ticks(lo, hi, 5) {
            let y = bar.1 as f64 + (1.0 - (t - lo) / span) * (bar.3 - 1) as f64;
            let y = y.round() as i32;
            let x = (bar.0 + bar.2) as i32;
            root.draw(&PathElement::new(vec![(x, y), (x + 5, y)], BLACK))
                .map_err(plot_err)?;
            root.draw_text(&fmt_num(t), &small.color(&BLACK), (x + 8, y - 6))
                .map_err(plot_err)?;
        }
        root.draw_text(
            unit,
            &small.color(&BLACK),
            (bar.0 as i32 - 4, (bar.1 + bar.3) as i32 + 8),
        )
        .map_err(plot_err)?;
        draw_markers(root, layout, slices, grid, markers)
    })
}

fn draw_markers(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    layout: &Layout,
    slices: &[usize],
    grid: [usize; 3],
    markers: &[([usize; 3], String)],
) -> Result<()> {
    let red = RGBColor(255, 40, 40);
    let font = (FONT, 13).into_font();
    for ([x, y, z], label) in markers {
        let Some(i) = slices.iter().position(|s| s == z) else {
            continue;
        };
        let (ox, oy) = layout.tile_origin(i);
        let s = layout.scale as i32;
        let cx = ox as i32 + *x as i32 * s + s / 2;
        let cy = oy as i32 + (grid[1] - 1 - y) as i32 * s + s / 2;
        let r = (2 * s).max(4);
        for (a, b) in [((cx - r, cy), (cx + r, cy)), ((cx, cy - r), (cx, cy + r))] {
            root.draw(&PathElement::new(vec![a, b], red.stroke_width(2)))
                .map_err(plot_err)?;
        }
        if !label.is_empty() {
            root.draw_text(label, &font.color(&red), (cx + r + 1, cy - r - 4))
                .map_err(plot_err)?;
        }
    }
    Ok(())
}

/// The quality mask as a montage of failure reasons, with a legend of the
/// codes present and their voxel counts (inside the mask).
pub fn quality_montage(quality: &Array3<u8>, mask: &Array3<bool>) -> Result<Figure> {
    let s = quality.shape();
    let grid = [s[0], s[1], s[2]];
    let code = |c: u8| QualityCode::from_code(c).unwrap_or(QualityCode::ModelFailure);
    let m = Montage::new(grid, mask, 200, |x, y, z| {
        if mask[(x, y, z)] {
            quality_color(code(quality[(x, y, z)]))
        } else {
            OUTSIDE
        }
    });
    let mut counts = [0usize; QualityCode::ALL.len()];
    for (q, m) in quality.iter().zip(mask.iter()) {
        if *m {
            counts[code(*q).code() as usize] += 1;
        }
    }
    let width = m.width;
    m.finish(
        "Quality: why each voxel has (or lacks) a value",
        None,
        |root, layout, _| {
            let small = (FONT, 12).into_font();
            let x0 = (width - layout.right + 14) as i32;
            let mut y = layout.top as i32 + 4;
            let outside = mask.iter().filter(|m| !**m).count();
            let mut rows: Vec<([u8; 3], String)> = QualityCode::ALL
                .iter()
                .filter(|q| counts[q.code() as usize] > 0)
                .map(|q| {
                    (
                        quality_color(*q),
                        format!("{} ({})", q.name(), counts[q.code() as usize]),
                    )
                })
                .collect();
            if outside > 0 {
                rows.push((OUTSIDE, format!("outside mask ({outside})")));
            }
            for (c, text) in rows {
                root.draw(&Rectangle::new(
                    [(x0, y), (x0 + 14, y + 14)],
                    RGBColor(c[0], c[1], c[2]).filled(),
                ))
                .map_err(plot_err)?;
                root.draw(&Rectangle::new([(x0, y), (x0 + 14, y + 14)], BLACK))
                    .map_err(plot_err)?;
                root.draw_text(&text, &small.color(&BLACK), (x0 + 20, y + 1))
                    .map_err(plot_err)?;
                y += 20;
            }
            Ok(())
        },
    )
}

/// Finite (min, max) of the samples, widened by 5 % (and to a non-empty
/// span).
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.5 * lo.abs().max(1.0)
    };
    (lo - pad, hi + pad)
}

const LINE_COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// A chart figure of `width x height`: `draw` draws on the root area.
fn chart_figure(
    width: u32,
    height: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<Figure> {
    register_font();
    let mut buf = canvas(width, height);
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(Figure {
        png: encode(&buf, width, height)?,
        width,
        height,
        colorbar: None,
        tiles: Vec::new(),
    })
}

/// Axes with labelled, round-numbered ticks and a faint grid.
fn draw_mesh<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    x_desc: &str,
    y_desc: &str,
) -> Result<()> {
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .x_label_formatter(&|v| fmt_num(*v))
        .y_label_formatter(&|v| fmt_num(*v))
        .light_line_style(RGBColor(246, 246, 246))
        .draw()
        .map_err(plot_err)
}

/// A plot of curves: measured traces as markers, fitted ones as lines.
pub fn line_plot(plot: &Plot) -> Result<Figure> {
    chart_figure(640, 380, |root| {
        let xr = padded_range(plot.traces.iter().flat_map(|t| t.x.iter().copied()));
        let yr = padded_range(plot.traces.iter().flat_map(|t| t.y.iter().copied()));
        // Headroom for the legend, so it does not hide the data.
        let yr = (yr.0, yr.1 + 0.12 * (yr.1 - yr.0) * plot.traces.len() as f64);
        let mut chart = ChartBuilder::on(root)
            .caption(&plot.title, (FONT, 15))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
            .map_err(plot_err)?;
        draw_mesh(&mut chart, &plot.x_label, &plot.y_label)?;
        for (k, t) in plot.traces.iter().enumerate() {
            let color = LINE_COLORS[k % LINE_COLORS.len()];
            let pts: Vec<(f64, f64)> =
                t.x.iter()
                    .zip(&t.y)
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .map(|(x, y)| (*x, *y))
                    .collect();
            if t.points {
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(plot_err)?
                    .label(t.label.as_str())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 3, color.filled()));
            } else {
                let mut sorted = pts;
                sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(sorted, color.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(t.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            }
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)
    })
}

/// A histogram of `values` over `range` in 40 bins; values outside the
/// range are counted in the caption, not drawn.
pub fn histogram(title: &str, unit: &str, values: &[f64], range: (f64, f64)) -> Result<Figure> {
    let (lo, hi) = range;
    let span = if hi > lo { hi - lo } else { 1.0 };
    const BINS: usize = 40;
    let mut counts = [0usize; BINS];
    let (mut below, mut above) = (0usize, 0usize);
    for &v in values.iter().filter(|v| v.is_finite()) {
        if v < lo {
            below += 1;
        } else if v > hi {
            above += 1;
        } else {
            counts[(((v - lo) / span * BINS as f64) as usize).min(BINS - 1)] += 1;
        }
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.08;
    chart_figure(640, 300, |root| {
        let caption = if below + above > 0 {
            format!("{title}: {below} below, {above} above the range shown")
        } else {
            title.to_string()
        };
        let mut chart = ChartBuilder::on(root)
            .caption(caption, (FONT, 15))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(lo..lo + span, 0f64..top)
            .map_err(plot_err)?;
        draw_mesh(&mut chart, unit, "voxels")?;
        let w = span / BINS as f64;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, c)| {
                let x0 = lo + i as f64 * w;
                let mid = viridis((i as f64 + 0.5) / BINS as f64);
                Rectangle::new(
                    [(x0, 0.0), (x0 + w, *c as f64)],
                    RGBColor(mid[0], mid[1], mid[2]).filled(),
                )
            }))
            .map_err(plot_err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        assert_eq!(
            ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let t = ticks(0.013, 0.087, 5);
        assert!(
            t.iter().all(|v| (0.013..=0.087).contains(v)) && t.len() >= 3,
            "{t:?}"
        );
        assert_eq!(fmt_num(0.6000000000000001), "0.6");
        assert_eq!(fmt_num(1500.0), "1500");
        assert_eq!(fmt_num(0.00012), "1.20e-4");
        assert_eq!(fmt_num(-5.551115123125783e-17), "0");
    }

    #[test]
    fn montage_slices_skip_empty_slices_and_thin_out_evenly() {
        let mut mask = Array3::from_elem((2, 2, 30), false);
        for z in 5..30 {
            mask[(0, 0, z)] = true;
        }
        let s = montage_slices(&mask, 12);
        assert_eq!(s.len(), 12);
        assert_eq!((s[0], s[11]), (5, 29));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            montage_slices(&Array3::from_elem((2, 2, 3), false), 12),
            vec![0, 1, 2]
        );
    }
}
