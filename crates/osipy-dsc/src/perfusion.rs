//! Perfusion quantities from deltaR2\* curves: CBV by the ratio of areas,
//! the hematocrit and density factor, time to peak, and normalisation to a
//! reference region.
//!
//! With `kH = (1 - Hct_large) / (1 - Hct_small)` and tissue density `rho`
//! (g/ml), the indicator-dilution relations (Rempp et al., Radiology 1994;
//! Østergaard, JMRI 2005) give
//! * `CBV = 100 kH / rho * int C(t) dt / int Ca(t) dt` (ml/100g),
//! * `CBF = 6000 kH / rho * max_t F R(t)` (ml/100g/min, F R in 1/s),
//! * `MTT = 60 CBV / CBF` (s, central volume theorem).
//!
//! The same factor multiplies CBV and CBF, so MTT does not depend on it.

use osipy_core::{Extension, KindInfo, OsipyError, Result};
use osipy_io::dro::percentile;

/// `int C dt / int Ca dt` by the trapezoid rule on `times`; NaN when the
/// AIF's area is not positive or a sample is not finite.
pub fn cbv_ratio(c: &[f64], ca: &[f64], times: &[f64]) -> f64 {
    let area = |y: &[f64]| -> f64 {
        times
            .windows(2)
            .zip(y.windows(2))
            .map(|(t, v)| 0.5 * (t[1] - t[0]) * (v[0] + v[1]))
            .sum()
    };
    let a = area(ca);
    if a > 0.0 {
        area(c) / a
    } else {
        f64::NAN
    }
}

/// The factor `kH / rho` of CBV and CBF, checked: hematocrits in [0, 1),
/// density positive.
pub fn hematocrit_density_factor(hct_large: f64, hct_small: f64, density: f64) -> Result<f64> {
    for (key, h) in [
        ("pipeline.hematocrit_large_vessel", hct_large),
        ("pipeline.hematocrit_small_vessel", hct_small),
    ] {
        if !(0.0..1.0).contains(&h) {
            return Err(OsipyError::metadata(
                key,
                h,
                "a fraction in [0, 1), e.g. 0.45 (large) or 0.25 (small vessels)",
            ));
        }
    }
    if !(density > 0.0 && density < 10.0) {
        return Err(OsipyError::metadata(
            "pipeline.tissue_density (g/ml)",
            density,
            "a density in g/ml, e.g. 1.04",
        ));
    }
    Ok((1.0 - hct_large) / (1.0 - hct_small) / density)
}

/// Index of the maximum of a curve (first on ties); `None` if a sample is
/// not finite.
pub fn peak_index(c: &[f64]) -> Option<usize> {
    if c.is_empty() || c.iter().any(|x| !x.is_finite()) {
        return None;
    }
    Some(
        c.iter()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |a, (i, x)| if *x > a.1 { (i, *x) } else { a },
            )
            .0,
    )
}

/// Registry entry of a normaliser: the reference value of a map from its
/// finite values inside the reference region (sorted ascending).
#[derive(Debug, Clone, Copy)]
pub struct Normalizer(pub fn(&[f64]) -> f64);

impl Extension for Normalizer {
    const KIND: KindInfo = KindInfo {
        id: "dsc_normalizers",
        label: "DSC reference-region normaliser",
        config_key: "dsc: pipeline.normalization",
    };
}

/// `mean` of the reference region.
pub fn norm_mean(sorted: &[f64]) -> f64 {
    sorted.iter().sum::<f64>() / sorted.len() as f64
}

/// `median` of the reference region (nearest rank).
pub fn norm_median(sorted: &[f64]) -> f64 {
    percentile(sorted, 0.5)
}

/// `robust_mean`: the mean of the values within three scaled median
/// absolute deviations (1.4826 MAD, the normal-consistent SD) of the median.
pub fn norm_robust_mean(sorted: &[f64]) -> f64 {
    let med = norm_median(sorted);
    let mut dev: Vec<f64> = sorted.iter().map(|x| (x - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let width = 3.0 * 1.4826 * percentile(&dev, 0.5);
    let kept: Vec<f64> = sorted
        .iter()
        .copied()
        .filter(|x| (x - med).abs() <= width)
        .collect();
    if kept.is_empty() {
        med
    } else {
        norm_mean(&kept)
    }
}

/// `values / reference`, with the reference from the finite values where
/// `region` is set by `normalizer`. Errors when the region holds no finite
/// positive value.
pub fn normalize(values: &[f64], region: &[bool], normalizer: &Normalizer, map: &str) -> Result<Vec<f64>> {
    let mut inside: Vec<f64> = values
        .iter()
        .zip(region)
        .filter(|(v, r)| **r && v.is_finite())
        .map(|(v, _)| *v)
        .collect();
    inside.sort_by(f64::total_cmp);
    let reference = if inside.is_empty() {
        f64::NAN
    } else {
        (normalizer.0)(&inside)
    };
    if !(reference > 0.0 && reference.is_finite()) {
        return Err(OsipyError::data(
            format!("reference-region value of {map}"),
            format!("{reference} from {} valid voxels", inside.len()),
            "a positive value: the reference mask must cover voxels with valid maps",
        ));
    }
    Ok(values.iter().map(|v| v / reference).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_ratio_is_exact_for_scaled_curves() {
        let t: Vec<f64> = (0..30).map(|i| i as f64 * 1.5).collect();
        let ca: Vec<f64> = t.iter().map(|x| (x / 5.0) * (-x / 5.0).exp()).collect();
        let c: Vec<f64> = ca.iter().map(|x| 0.04 * x).collect();
        assert!((cbv_ratio(&c, &ca, &t) - 0.04).abs() < 1e-15);
        assert!(cbv_ratio(&c, &[0.0; 30], &t).is_nan());
    }

    #[test]
    fn factor_and_its_checks() {
        let k = hematocrit_density_factor(0.45, 0.25, 1.04).unwrap();
        assert!((k - 0.55 / 0.75 / 1.04).abs() < 1e-15);
        assert!(hematocrit_density_factor(45.0, 0.25, 1.04)
            .unwrap_err()
            .to_string()
            .contains("hematocrit_large_vessel"));
        assert!(hematocrit_density_factor(0.45, 0.25, 0.0).is_err());
    }

    #[test]
    fn normalisers_and_errors() {
        let v = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(norm_mean(&v), 22.0);
        assert_eq!(norm_median(&v), 3.0);
        assert_eq!(norm_robust_mean(&v), 2.5);
        let out = normalize(
            &[2.0, 4.0, 8.0],
            &[true, true, false],
            &Normalizer(norm_mean),
            "CBV",
        )
        .unwrap();
        assert_eq!(out, [2.0 / 3.0, 4.0 / 3.0, 8.0 / 3.0]);
        let e = normalize(&[2.0, f64::NAN], &[false, true], &Normalizer(norm_mean), "CBV").unwrap_err();
        assert!(e.to_string().contains("reference mask"), "{e}");
        assert_eq!(peak_index(&[0.0, 3.0, 1.0, 3.0]), Some(1));
        assert_eq!(peak_index(&[0.0, f64::NAN]), None);
    }
}
