//! What a modality tells the run report about its curves: plots as plain
//! data (no drawing here), so the report crate draws every modality's
//! curves with one code path and `osipy report` can redraw them from
//! `osipy_run.json`.
//!
//! A modality describes its voxel curves with [`CurveAxes`] and a function
//! from a voxel to its (measured, fitted) samples; [`voxel_curves`] picks
//! the representative voxels (median and worst R^2 within the mask, plus the
//! voxels the user names in `output.report_voxels`) and builds the plots.
//! Other curves (the AIF) are [`Plot`]s built directly.

use ndarray::ArrayView3;
use osipy_core::{OsipyError, Result};
use serde::{Deserialize, Serialize};

/// One line or set of points of a plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Legend text.
    pub label: String,
    /// Abscissae.
    #[serde(deserialize_with = "null_as_nan")]
    pub x: Vec<f64>,
    /// Ordinates (NaN samples are left out of the drawing).
    #[serde(deserialize_with = "null_as_nan")]
    pub y: Vec<f64>,
    /// Drawn as markers (measured data) rather than a line (a model).
    pub points: bool,
}

/// JSON has no NaN: serde_json writes it as `null`, read back here as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<f64>, D::Error> {
    let v: Vec<Option<f64>> = Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// A figure of curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plot {
    /// Figure title.
    pub title: String,
    /// Abscissa label, with its unit (`time (s)`).
    pub x_label: String,
    /// Ordinate label, with its unit (`concentration (mM)`).
    pub y_label: String,
    /// The curves.
    pub traces: Vec<Trace>,
    /// Voxels (x, y, z) the plot refers to, marked on a map by the report
    /// (the voxel of a voxel curve, the voxels an AIF was detected from).
    pub voxels: Vec<[usize; 3]>,
}

/// How a modality's voxel curves are labelled. The rank map is f64, or the
/// float32 a run holds its results in where memory is tight (IVIM).
#[derive(Debug, Clone, Copy)]
pub struct CurveAxes<'a, R = f64> {
    /// What is plotted (`concentration`, `signal`), for titles and legends.
    pub quantity: &'a str,
    /// Abscissa label with unit.
    pub x_label: &'a str,
    /// Ordinate label with unit.
    pub y_label: &'a str,
    /// Abscissae shared by every voxel (frame times, b-values, PLDs).
    pub x: &'a [f64],
    /// The map the representative voxels are ranked by, with its name: the
    /// fit's R^2 (`("R²", maps.r_squared.view())`), or a parameter map where
    /// the method has no R^2.
    pub rank: (&'a str, ArrayView3<'a, R>),
}

/// (x, y, z) of flat voxel index `v` on `grid` (C order, z fastest).
pub fn voxel_xyz(v: usize, grid: [usize; 3]) -> [usize; 3] {
    [v / (grid[1] * grid[2]), (v / grid[2]) % grid[1], v % grid[2]]
}

/// The representative voxels of a fit, each with why it was picked: the
/// voxel of median rank value (R^2) and the one of lowest value among the
/// mask's voxels where it is finite, then every voxel of `named`
/// (`output.report_voxels`), which must lie on the grid.
pub fn representative_voxels<R: Copy + Into<f64>>(
    (rank_name, rank): (&str, ArrayView3<'_, R>),
    mask: &[bool],
    named: &[[usize; 3]],
) -> Result<Vec<(String, usize)>> {
    let s = rank.shape();
    let grid = [s[0], s[1], s[2]];
    let r2 = rank.as_standard_layout();
    let r2 = r2.as_slice().unwrap_or(&[]);
    let keep = |v: usize| mask.get(v).copied().unwrap_or(false) && r2[v].into().is_finite();
    let value = |v: usize| -> f64 { r2[v].into() };
    // The index of fitted voxels is built at a large run's peak of memory:
    // 4 bytes a voxel where the grid allows it.
    let (median, lowest) = if u32::try_from(r2.len()).is_ok() {
        median_and_lowest::<u32>(r2.len(), keep, value)
    } else {
        median_and_lowest::<usize>(r2.len(), keep, value)
    };
    let mut out = Vec::new();
    if let Some(v) = median {
        out.push((format!("median {rank_name}"), v));
    }
    if let Some(v) = lowest {
        out.push((format!("lowest {rank_name}"), v));
    }
    for &[x, y, z] in named {
        if x >= grid[0] || y >= grid[1] || z >= grid[2] {
            return Err(OsipyError::metadata(
                "output.report_voxels",
                format!("[{x}, {y}, {z}]"),
                format!(
                    "voxel indices [x, y, z] inside the {}x{}x{} grid (counted from 0)",
                    grid[0], grid[1], grid[2]
                ),
            ));
        }
        out.push(("named".to_string(), (x * grid[1] + y) * grid[2] + z));
    }
    Ok(out)
}

/// Measured and fitted curves of the representative voxels (see
/// [`representative_voxels`]); `curve(v)` gives voxel `v`'s (measured,
/// fitted) samples on `axes.x`, or `None` where it has none. A fitted curve
/// with no finite sample (a failed fit, or a method with no fitted curve)
/// is left out of the plot.
pub fn voxel_curves<R: Copy + Into<f64>>(
    mask: &[bool],
    named: &[[usize; 3]],
    axes: CurveAxes<'_, R>,
    curve: impl Fn(usize) -> Option<(Vec<f64>, Vec<f64>)>,
) -> Result<Vec<Plot>> {
    let (rank_name, rank) = axes.rank;
    let s = rank.shape();
    let grid = [s[0], s[1], s[2]];
    let mut plots = Vec::new();
    for (why, v) in representative_voxels(axes.rank, mask, named)? {
        let Some((measured, fitted)) = curve(v) else {
            continue;
        };
        let xyz = voxel_xyz(v, grid);
        let value: f64 = rank[(xyz[0], xyz[1], xyz[2])].into();
        let r2 = if value.is_finite() {
            format!(", {rank_name} = {value:.3}")
        } else {
            String::new()
        };
        let mut traces = vec![Trace {
            label: format!("measured {}", axes.quantity),
            x: axes.x.to_vec(),
            y: measured,
            points: true,
        }];
        if fitted.iter().any(|y| y.is_finite()) {
            traces.push(Trace {
                label: "fit".to_string(),
                x: axes.x.to_vec(),
                y: fitted,
                points: false,
            });
        }
        plots.push(Plot {
            title: format!(
                "{} at voxel ({}, {}, {}): {why}{r2}",
                capitalise(axes.quantity),
                xyz[0],
                xyz[1],
                xyz[2]
            ),
            x_label: axes.x_label.to_string(),
            y_label: axes.y_label.to_string(),
            traces,
            voxels: vec![xyz],
        });
    }
    Ok(plots)
}

/// A voxel index stored in an index vector ([`median_and_lowest`]).
trait VoxelIndex: Copy {
    fn of(v: usize) -> Self;
    fn get(self) -> usize;
}

impl VoxelIndex for u32 {
    fn of(v: usize) -> Self {
        // Used only on grids of at most u32::MAX voxels.
        v as u32
    }
    fn get(self) -> usize {
        self as usize
    }
}

impl VoxelIndex for usize {
    fn of(v: usize) -> Self {
        v
    }
    fn get(self) -> usize {
        self
    }
}

/// Among the `n` voxels that `keep`, the one of median `value` and (when
/// there are at least two) the one of lowest; ties broken by index, so the
/// pick depends on nothing else, and the median found by selection (linear
/// in the volume), not by sorting.
fn median_and_lowest<I: VoxelIndex>(
    n: usize,
    keep: impl Fn(usize) -> bool,
    value: impl Fn(usize) -> f64,
) -> (Option<usize>, Option<usize>) {
    let mut fitted: Vec<I> = (0..n).filter(|&v| keep(v)).map(I::of).collect();
    let by_rank = |a: &I, b: &I| {
        value(a.get())
            .total_cmp(&value(b.get()))
            .then(a.get().cmp(&b.get()))
    };
    let lowest = fitted
        .iter()
        .copied()
        .min_by(by_rank)
        .filter(|_| fitted.len() > 1);
    let median = (!fitted.is_empty()).then(|| {
        let mid = fitted.len() / 2;
        fitted.select_nth_unstable_by(mid, by_rank).1.get()
    });
    (median, lowest.map(I::get))
}

/// The arterial input function as used by the fit: `source` says where it
/// came from (`population parker`, `detected`, a file), `voxels` are the
/// voxels it was detected from (empty otherwise).
pub fn aif_plot(
    x: &[f64],
    y: &[f64],
    x_label: &str,
    y_label: &str,
    source: &str,
    voxels: Vec<[usize; 3]>,
) -> Plot {
    Plot {
        title: format!("Arterial input function ({source})"),
        x_label: x_label.to_string(),
        y_label: y_label.to_string(),
        traces: vec![Trace {
            label: "AIF".to_string(),
            x: x.to_vec(),
            y: y.to_vec(),
            points: false,
        }],
        voxels,
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn picks_median_and_worst_r2_in_the_mask_then_named_voxels() {
        // 1x2x3 grid; voxel 5 is outside the mask (and would be the worst).
        let r2 = Array3::from_shape_vec((1, 2, 3), vec![0.9, 0.5, f64::NAN, 0.7, 0.99, -3.0]).unwrap();
        let mask = [true, true, true, true, true, false];
        let picked = representative_voxels(("R²", r2.view()), &mask, &[[0, 1, 2]]).unwrap();
        // Finite in mask, sorted: 0.5 (1), 0.7 (3), 0.9 (0), 0.99 (4): median index 2 -> voxel 0.
        assert_eq!(
            picked,
            vec![
                ("median R²".to_string(), 0),
                ("lowest R²".to_string(), 1),
                ("named".to_string(), 5)
            ]
        );
        let e = representative_voxels(("R²", r2.view()), &mask, &[[0, 2, 0]])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("output.report_voxels") && e.contains("[0, 2, 0]") && e.contains("1x2x3"),
            "{e}"
        );
        assert_eq!(voxel_xyz(5, [1, 2, 3]), [0, 1, 2]);
    }

    /// The u32 index (grids up to 2^32 voxels) and the usize one (larger
    /// grids) pick the same voxels, ties going to the lower index; a float32
    /// rank map picks as its f64 widening does.
    #[test]
    fn both_index_widths_and_float32_ranks_pick_the_same_voxels() {
        let n = 1001;
        // Values repeat (ties) and some voxels are left out.
        let value = |v: usize| ((v * 37) % 101) as f64 / 7.0;
        let keep = |v: usize| v % 13 != 4;
        let narrow = median_and_lowest::<u32>(n, keep, value);
        let wide = median_and_lowest::<usize>(n, keep, value);
        assert_eq!(narrow, wide);
        // By hand: sort the kept voxels by (value, index).
        let mut kept: Vec<usize> = (0..n).filter(|&v| keep(v)).collect();
        kept.sort_by(|a, b| value(*a).total_cmp(&value(*b)).then(a.cmp(b)));
        assert_eq!(narrow, (Some(kept[kept.len() / 2]), Some(kept[0])));
        // One voxel: a median, no lowest; none: neither.
        assert_eq!(median_and_lowest::<u32>(1, |_| true, value), (Some(0), None));
        assert_eq!(median_and_lowest::<u32>(5, |_| false, value), (None, None));

        let r2 = Array3::from_shape_fn((7, 11, 13), |(x, y, z)| value((x * 11 + y) * 13 + z));
        let mask: Vec<bool> = (0..n).map(keep).collect();
        let r2_f32 = r2.mapv(|x| x as f32);
        assert_eq!(
            representative_voxels(("R²", r2_f32.view()), &mask, &[]).unwrap(),
            representative_voxels(("R²", r2_f32.mapv(f64::from).view()), &mask, &[]).unwrap()
        );
    }

    /// A plot with missing samples survives `osipy_run.json` (NaN is
    /// written as null and read back as NaN).
    #[test]
    fn plots_with_nan_round_trip_through_json() {
        let p = Plot {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            traces: vec![Trace {
                label: "measured".into(),
                x: vec![0.0, 1.0],
                y: vec![f64::NAN, 2.0],
                points: true,
            }],
            voxels: vec![[1, 2, 3]],
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("[null,2.0]"), "{text}");
        let back: Plot = serde_json::from_str(&text).unwrap();
        assert!(back.traces[0].y[0].is_nan() && back.traces[0].y[1] == 2.0);
        assert_eq!(back.voxels, p.voxels);
    }

    #[test]
    fn voxel_curves_label_the_voxel_and_skip_voxels_without_a_curve() {
        let r2 = Array3::from_shape_vec((1, 1, 3), vec![0.8, 0.4, 0.6]).unwrap();
        let axes = CurveAxes {
            quantity: "signal",
            x_label: "b (s/mm²)",
            y_label: "signal (a.u.)",
            x: &[0.0, 100.0],
            rank: ("R²", r2.view()),
        };
        let plots = voxel_curves(&[true; 3], &[[0, 0, 0]], axes, |v| match v {
            1 => None,
            2 => Some((vec![1.0, 0.5], vec![1.0, 0.55])),
            _ => Some((vec![1.0, 0.5], vec![f64::NAN; 2])),
        })
        .unwrap();
        // Median is voxel 2 (0.6); lowest is voxel 1, which has no curve;
        // the named voxel 0 has a failed fit: measured points only.
        assert_eq!(plots.len(), 2);
        assert_eq!(plots[0].title, "Signal at voxel (0, 0, 2): median R², R² = 0.600");
        assert_eq!(plots[0].voxels, vec![[0, 0, 2]]);
        assert!(plots[0].traces[0].points && !plots[0].traces[1].points);
        assert_eq!(plots[1].traces.len(), 1);
        assert!(plots[1].title.contains("named, R² = 0.800"), "{}", plots[1].title);
    }
}
