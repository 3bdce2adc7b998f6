//! Comparing parameter maps with known truth (digital reference objects).

use ndarray::Array3;
use osipy_core::{OsipyError, Result};
use serde::Serialize;

/// One row of a validation report.
#[derive(Debug, Clone, Serialize)]
pub struct DroRow {
    /// Suite, e.g. `ivim-phantom`.
    pub suite: String,
    /// Case within the suite.
    pub case: String,
    /// Parameter.
    pub parameter: String,
    /// Voxels or cases compared.
    pub n: usize,
    /// Median of the error measure.
    pub median_error: f64,
    /// 90th percentile of the error measure.
    pub p90_error: f64,
    /// Bias (signed error measure).
    pub bias: f64,
    /// Cases outside the tolerance (or invalid voxels).
    pub n_fail: usize,
    /// The tolerance applied and where it comes from.
    pub tolerance: String,
    /// Whether the row passes.
    pub pass: bool,
}

/// Error statistics of one parameter map against its truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorStats {
    /// Parameter name.
    pub name: String,
    /// Voxels compared (in the mask, truth finite).
    pub n: usize,
    /// Of those, voxels whose estimate is invalid (NaN).
    pub n_invalid: usize,
    /// Median of |estimate - truth| / |truth| over valid voxels.
    pub median_abs_rel_error: f64,
    /// 90th percentile of the same.
    pub p90_abs_rel_error: f64,
    /// Mean signed relative error (estimate - truth) / |truth| (bias).
    pub bias: f64,
    /// Median signed relative error (robust bias, as Python osipy reports).
    pub median_signed_rel_error: f64,
    /// Median absolute error, in the map's units (for truths near zero).
    pub median_abs_error: f64,
}

/// Nearest-rank percentile `q` in [0, 1] of sorted values; NaN when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest-rank percentile.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Nearest-rank percentiles `qs` (each in [0, 1]) of unsorted `values`,
/// equal to [`percentile`] of the sorted values, in O(n) per percentile by
/// selection instead of an O(n log n) sort (the order of `values` changes).
/// NaN for each when `values` is empty. Values compare by
/// [`f64::total_cmp`].
pub fn percentiles(values: &mut [f64], qs: &[f64]) -> Vec<f64> {
    let n = values.len();
    if n == 0 {
        return vec![f64::NAN; qs.len()];
    }
    let rank = |q: f64| ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
    // Ascending ranks, each selected in the part right of the previous one.
    let mut order: Vec<usize> = (0..qs.len()).collect();
    order.sort_by_key(|&i| rank(qs[i]));
    let mut out = vec![f64::NAN; qs.len()];
    let mut start = 0;
    for i in order {
        let r = rank(qs[i]);
        if r >= start {
            values[start..].select_nth_unstable_by(r - start, f64::total_cmp);
            start = r;
        }
        out[i] = values[r];
    }
    out
}

/// Compares `estimate` with `truth` within `mask` (all voxels when `None`).
/// Relative errors use voxels whose truth is non-zero.
pub fn compare(
    name: &str,
    estimate: &Array3<f64>,
    truth: &Array3<f64>,
    mask: Option<&Array3<bool>>,
) -> Result<ErrorStats> {
    if estimate.shape() != truth.shape() || mask.is_some_and(|m| m.shape() != truth.shape()) {
        return Err(OsipyError::data(
            format!("shapes compared for {name}"),
            format!("estimate {:?}, truth {:?}", estimate.shape(), truth.shape()),
            "identical shapes (and mask shape)",
        ));
    }
    let (mut rel, mut abs, mut signed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut n, mut n_invalid) = (0, 0);
    for (idx, (e, t)) in estimate.indexed_iter().map(|(i, e)| (i, (*e, truth[i]))) {
        if mask.is_some_and(|m| !m[idx]) || !t.is_finite() {
            continue;
        }
        n += 1;
        if !e.is_finite() {
            n_invalid += 1;
            continue;
        }
        abs.push((e - t).abs());
        if t != 0.0 {
            rel.push(((e - t) / t).abs());
            signed.push((e - t) / t.abs());
        }
    }
    rel.sort_by(|a, b| a.total_cmp(b));
    abs.sort_by(|a, b| a.total_cmp(b));
    let bias = if signed.is_empty() {
        f64::NAN
    } else {
        signed.iter().sum::<f64>() / signed.len() as f64
    };
    signed.sort_by(|a, b| a.total_cmp(b));
    Ok(ErrorStats {
        name: name.into(),
        n,
        n_invalid,
        median_abs_rel_error: percentile(&rel, 0.5),
        p90_abs_rel_error: percentile(&rel, 0.9),
        bias,
        median_signed_rel_error: percentile(&signed, 0.5),
        median_abs_error: percentile(&abs, 0.5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_selection_equal_percentiles_of_the_sorted_values() {
        let mut rng = 12345u64;
        for n in [0usize, 1, 2, 3, 10, 101, 1000] {
            let values: Vec<f64> = (0..n)
                .map(|i| {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Repeated values too.
                    ((rng >> 40) % 50) as f64 - if i % 7 == 0 { 0.5 } else { 0.0 }
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let qs = [0.98, 0.02, 0.5, 0.25, 0.75, 0.0, 1.0, 0.5];
            let got = percentiles(&mut values.clone(), &qs);
            for (q, g) in qs.iter().zip(&got) {
                let want = percentile(&sorted, *q);
                assert!(g.to_bits() == want.to_bits(), "n {n} q {q}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn statistics_of_a_known_error_pattern() {
        // Truth 1 everywhere; estimates 1.0, 1.1, 0.8, 1.3, NaN, and one voxel
        // outside the mask. Relative errors 0, 0.1, 0.2, 0.3 -> median (nearest
        // rank, 2 of 4) 0.1, p90 0.3, bias (0 + 0.1 - 0.2 + 0.3)/4 = 0.05.
        let est = Array3::from_shape_vec((6, 1, 1), vec![1.0, 1.1, 0.8, 1.3, f64::NAN, 9.0]).unwrap();
        let truth = Array3::from_elem((6, 1, 1), 1.0);
        let mut mask = Array3::from_elem((6, 1, 1), true);
        mask[[5, 0, 0]] = false;
        let s = compare("ve", &est, &truth, Some(&mask)).unwrap();
        assert_eq!((s.n, s.n_invalid), (5, 1));
        assert!((s.median_abs_rel_error - 0.1).abs() < 1e-12);
        assert!((s.p90_abs_rel_error - 0.3).abs() < 1e-12);
        assert!((s.bias - 0.05).abs() < 1e-12);
        // Signed errors sorted: -0.2, 0, 0.1, 0.3 -> nearest-rank median 0.
        assert_eq!(s.median_signed_rel_error, 0.0);
        assert!(compare("ve", &est, &Array3::zeros((2, 1, 1)), None).is_err());
    }
}

/// One case of an OSIPI DCE-DSC CodeCollection CSV: reference values by
/// column name and the time series (time in s, tissue and AIF in mM).
#[derive(Debug, Clone)]
pub struct OsipiCase {
    /// Case label.
    pub label: String,
    /// Numeric columns (reference parameters) by header name.
    pub values: std::collections::BTreeMap<String, f64>,
    /// Time points (s).
    pub t: Vec<f64>,
    /// Tissue concentration (mM).
    pub c: Vec<f64>,
    /// Plasma AIF (mM).
    pub ca: Vec<f64>,
}

/// Reads an OSIPI DCE CSV: a header row, one case per row, time series as
/// space-separated numbers in one field.
pub fn read_osipi_cases(
    path: &std::path::Path,
    t_col: &str,
    c_col: &str,
    ca_col: &str,
) -> Result<Vec<OsipiCase>> {
    let text = std::fs::read_to_string(path).map_err(|e| OsipyError::Io {
        path: path.into(),
        message: "cannot read".into(),
        source: Some(e),
    })?;
    let mut lines = text.trim_start_matches('\u{feff}').lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| OsipyError::io(path, format!("no column {name:?}; columns are {header:?}")))
    };
    let (ti, ci, ai) = (col(t_col)?, col(c_col)?, col(ca_col)?);
    let series = |s: &str| -> Result<Vec<f64>> {
        s.split_whitespace()
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| OsipyError::io(path, format!("not a number: {v:?}")))
            })
            .collect()
    };
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() != header.len() {
                return Err(OsipyError::io(
                    path,
                    format!("row with {} fields; header has {}", f.len(), header.len()),
                ));
            }
            let values = header
                .iter()
                .zip(&f)
                .filter_map(|(h, v)| v.trim().parse::<f64>().ok().map(|x| (h.to_string(), x)))
                .collect();
            Ok(OsipiCase {
                label: f[0].trim().to_string(),
                values,
                t: series(f[ti])?,
                c: series(f[ci])?,
                ca: series(f[ai])?,
            })
        })
        .collect()
}
