//! Comparing parameter maps with known truth (digital reference objects).

use ndarray::Array3;
use osipy_core::{OsipyError, Result};
use serde::Serialize;

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
    /// Median absolute error, in the map's units (for truths near zero).
    pub median_abs_error: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest-rank percentile.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
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
    Ok(ErrorStats {
        name: name.into(),
        n,
        n_invalid,
        median_abs_rel_error: percentile(&rel, 0.5),
        p90_abs_rel_error: percentile(&rel, 0.9),
        bias,
        median_abs_error: percentile(&abs, 0.5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(compare("ve", &est, &Array3::zeros((2, 1, 1)), None).is_err());
    }
}
