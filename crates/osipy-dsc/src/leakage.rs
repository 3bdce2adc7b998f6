//! Contrast-leakage correction of tissue deltaR2\* curves.
//!
//! Both methods regress each tissue curve on a reference curve, the mean of
//! the non-enhancing voxels (Boxerman et al., AJNR 2006), not on the AIF:
//!
//! * `bsw` (Boxerman-Schmainda-Weisskoff; Weisskoff et al. 1994, Boxerman
//!   et al. 2006): `dR2*(t) = K1 ref(t) - K2 int_0^t ref`, K1 and K2 by
//!   linear least squares; the corrected curve is `dR2*(t) + K2 int_0^t ref`.
//! * `bidirectional` (Bjornerud et al., JCBFM 2011; Leu et al., AJNR 2016):
//!   with an efflux rate `kep` the leakage term is
//!   `-K2 int_0^t ref(s) e^{-kep (t - s)} ds`, and two more regressors,
//!   `ref'` and `ref''`, absorb first-pass shape differences (see
//!   [`bidirectional`]); the corrected curve adds back
//!   `K2 int_0^t ref(s) e^{-kep (t - s)} ds`.
//!
//! Non-enhancing voxels: those whose late deltaR2\* (mean of the last
//! quarter of the frames) lies within 3 scaled MADs of the median over the
//! valid voxels of the mask (leaky voxels sit off it, either way: T1 leakage
//! drives the late signal below, T2\* leakage above).

use crate::deconv::uniform_step;
use ndarray::{Array2, ArrayView2};
use osipy_backend::Device;
use osipy_convolution::exp_conv;
use osipy_core::{Extension, KindInfo, OsipyError, Result};
use osipy_fitting::map_voxels;

/// A leakage correction's result.
#[derive(Debug, Clone)]
pub struct Leakage {
    /// Corrected curves (voxels x frames); invalid voxels copied unchanged.
    pub corrected: Array2<f64>,
    /// K2 per voxel (1/s), NaN outside the valid voxels.
    pub k2: Vec<f64>,
    /// Efflux rate per voxel (1/s) of `bidirectional`.
    pub kep: Option<Vec<f64>>,
    /// The non-enhancing voxels averaged into the reference.
    pub reference_voxels: Vec<bool>,
}

/// Signature of a leakage correction: curves, valid voxels, frame times.
pub type LeakageFn = fn(ArrayView2<'_, f64>, &[bool], &[f64], &Device) -> Result<Leakage>;

/// Registry entry of a leakage correction.
#[derive(Debug, Clone, Copy)]
pub struct LeakageCorrection(pub LeakageFn);

impl Extension for LeakageCorrection {
    const KIND: KindInfo = KindInfo {
        id: "dsc_leakage",
        label: "DSC leakage correction",
        config_key: "dsc: pipeline.leakage_method",
    };
}

/// The non-enhancing voxels (see the module notes) and the mean of their
/// curves.
pub fn non_enhancing_reference(curves: ArrayView2<'_, f64>, valid: &[bool]) -> Result<(Vec<f64>, Vec<bool>)> {
    let (n_vox, nt) = curves.dim();
    let late_from = nt - (nt / 4).max(1);
    let late: Vec<f64> = (0..n_vox)
        .map(|v| {
            if valid[v] {
                curves.row(v).iter().skip(late_from).sum::<f64>() / (nt - late_from) as f64
            } else {
                f64::NAN
            }
        })
        .collect();
    let mut sorted: Vec<f64> = late.iter().copied().filter(|x| x.is_finite()).collect();
    if sorted.len() < 2 {
        return Err(OsipyError::data(
            "leakage correction",
            format!("{} valid voxels", sorted.len()),
            "at least 2 valid voxels to form the non-enhancing reference curve",
        ));
    }
    sorted.sort_by(f64::total_cmp);
    let med = osipy_io::dro::percentile(&sorted, 0.5);
    let mut dev: Vec<f64> = sorted.iter().map(|x| (x - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let width = 3.0 * 1.4826 * osipy_io::dro::percentile(&dev, 0.5);
    let used: Vec<bool> = late.iter().map(|x| (x - med).abs() <= width).collect();
    let n_used = used.iter().filter(|u| **u).count();
    let mut reference = vec![0.0; nt];
    for v in (0..n_vox).filter(|v| used[*v]) {
        for (r, c) in reference.iter_mut().zip(curves.row(v)) {
            *r += c / n_used as f64;
        }
    }
    Ok((reference, used))
}

/// Solves the small symmetric system `m x = b` (Gaussian elimination with
/// partial pivoting); `None` when singular.
fn solve<const N: usize>(mut m: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for c in 0..N {
        let p = (c..N).max_by(|i, j| m[*i][c].abs().total_cmp(&m[*j][c].abs()))?;
        if !(m[p][c].abs() > 1e-300) {
            return None;
        }
        m.swap(c, p);
        b.swap(c, p);
        for r in c + 1..N {
            let f = m[r][c] / m[c][c];
            for k in c..N {
                m[r][k] -= f * m[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = [0.0; N];
    for r in (0..N).rev() {
        let s: f64 = (r + 1..N).map(|k| m[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / m[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Least squares of `y` on the columns `x` (all `nt` long).
fn least_squares<const N: usize>(x: [&[f64]; N], y: &[f64]) -> Option<[f64; N]> {
    let mut m = [[0.0; N]; N];
    let mut b = [0.0; N];
    for i in 0..N {
        for j in 0..N {
            m[i][j] = x[i].iter().zip(x[j]).map(|(a, c)| a * c).sum();
        }
        b[i] = x[i].iter().zip(y).map(|(a, c)| a * c).sum();
    }
    solve(m, b)
}

/// Shared driver: `kernel(curve, ref, int_ref, scratch, out_curve) ->
/// (K2, kep)` per valid voxel, in parallel, with `scratch_len` scratch.
#[allow(clippy::too_many_arguments)]
fn correct<F>(
    curves: ArrayView2<'_, f64>,
    valid: &[bool],
    times: &[f64],
    device: &Device,
    (reference, used): (Vec<f64>, Vec<bool>),
    scratch_len: usize,
    with_kep: bool,
    kernel: F,
) -> Result<Leakage>
where
    F: Fn(&[f64], &[f64], &[f64], &mut [f64], &mut [f64]) -> Option<(f64, f64)> + Sync + Send,
{
    let (n_vox, nt) = curves.dim();
    let mut int_ref = vec![0.0; nt];
    exp_conv(times, &reference, 0.0, &mut int_ref);
    let rec = nt + 2;
    let mut out = vec![0.0; n_vox * rec];
    map_voxels(
        device,
        &mut out,
        rec,
        512,
        None,
        || vec![0.0; scratch_len],
        |scratch, v, record| {
            let (curve_out, tail) = record.split_at_mut(nt);
            let row = curves.row(v);
            let y = row.as_slice().unwrap_or(&[]);
            curve_out.copy_from_slice(y);
            let fitted = if valid[v] {
                kernel(y, &reference, &int_ref, scratch, curve_out)
            } else {
                None
            };
            let (k2, kep) = fitted.unwrap_or((f64::NAN, f64::NAN));
            tail.copy_from_slice(&[k2, kep]);
        },
    )?;
    let mut corrected = Array2::zeros((n_vox, nt));
    let (mut k2, mut kep) = (Vec::with_capacity(n_vox), Vec::with_capacity(n_vox));
    for (v, r) in out.chunks_exact(rec).enumerate() {
        corrected.row_mut(v).assign(&ndarray::ArrayView1::from(&r[..nt]));
        k2.push(r[nt]);
        kep.push(r[nt + 1]);
    }
    Ok(Leakage {
        corrected,
        k2,
        kep: with_kep.then_some(kep),
        reference_voxels: used,
    })
}

/// Checks the shapes and forms the reference.
fn prepare(curves: ArrayView2<'_, f64>, valid: &[bool], times: &[f64]) -> Result<(Vec<f64>, Vec<bool>)> {
    let (n_vox, nt) = curves.dim();
    if !curves.is_standard_layout() {
        return Err(OsipyError::data(
            "tissue curves",
            "a strided array",
            "a contiguous voxels x frames array",
        ));
    }
    if valid.len() != n_vox || times.len() != nt {
        return Err(OsipyError::data(
            "leakage correction input",
            format!("{} mask values and {} times", valid.len(), times.len()),
            format!("{n_vox} mask values and {nt} times"),
        ));
    }
    non_enhancing_reference(curves, valid)
}

/// `bsw`: see the module notes.
pub fn bsw(curves: ArrayView2<'_, f64>, valid: &[bool], times: &[f64], device: &Device) -> Result<Leakage> {
    let reference = prepare(curves, valid, times)?;
    correct(
        curves,
        valid,
        times,
        device,
        reference,
        0,
        false,
        |y, r, ir, _scratch, out| {
            let [_k1, minus_k2] = least_squares([r, ir], y)?;
            let k2 = -minus_k2;
            for (o, i) in out.iter_mut().zip(ir) {
                *o += k2 * i;
            }
            Some((k2, f64::NAN))
        },
    )
}

/// Efflux rates tried by `bidirectional` (1/s): `0.05 (j / 40)^2`, dense
/// near 0. Faster efflux (a time constant under 20 s) decays within the
/// first pass, where it cannot be told from a first-pass shape difference:
/// allowing rates up to 0.2 /s doubled the CBV error `bidirectional`
/// introduced in non-leaky tissue of varied MTT on our phantom.
const KEP_GRID: usize = 41;
const KEP_MAX: f64 = 0.05;

/// `bidirectional`: `dR2*(t) = K1 ref + D1 ref' + D2 ref'' - K2 int_0^t
/// ref(s) e^{-kep (t - s)} ds` (Bjornerud et al. 2011; Leu et al. 2016).
///
/// The efflux term is theirs; the `ref'` and `ref''` terms are the first
/// two moments of the relative transport function between tissue and
/// reference (a tissue whose first pass is later or broader than the
/// reference's, e.g. another MTT, is `ref` convolved with a kernel, and
/// `h * ref ~ m0 ref - m1 ref' + m2/2 ref''`). They confine the first-pass
/// shape difference to terms that integrate to about zero, so it is not
/// read as leakage, as it is by `bsw` (the MTT sensitivity Bjornerud et al.
/// point out). For each kep of a grid (0 to 0.05 /s, quadratic spacing) the
/// four coefficients are linear least squares; the kep with the least
/// residual is kept (variable projection).
pub fn bidirectional(
    curves: ArrayView2<'_, f64>,
    valid: &[bool],
    times: &[f64],
    device: &Device,
) -> Result<Leakage> {
    let reference = prepare(curves, valid, times)?;
    let dt = uniform_step(times)?;
    let nt = times.len();
    let r = &reference.0;
    let at = |i: isize| r[i.clamp(0, nt as isize - 1) as usize];
    let d1: Vec<f64> = (0..nt as isize)
        .map(|i| (at(i + 1) - at(i - 1)) / (2.0 * dt))
        .collect();
    let d2: Vec<f64> = (0..nt as isize)
        .map(|i| (at(i + 1) - 2.0 * at(i) + at(i - 1)) / (dt * dt))
        .collect();
    correct(
        curves,
        valid,
        times,
        device,
        reference.clone(),
        2 * nt,
        true,
        |y, r, _ir, scratch, out| {
            let (leak, best_leak) = scratch.split_at_mut(nt);
            let mut best: Option<(f64, f64, f64)> = None;
            for j in 0..KEP_GRID {
                let kep = KEP_MAX * (j as f64 / (KEP_GRID - 1) as f64).powi(2);
                exp_conv(times, r, kep, leak);
                let Some(c) = least_squares([r, &d1, &d2, &*leak], y) else {
                    continue;
                };
                let ssr: f64 = (0..nt)
                    .map(|i| (y[i] - c[0] * r[i] - c[1] * d1[i] - c[2] * d2[i] - c[3] * leak[i]).powi(2))
                    .sum();
                if best.is_none_or(|b| ssr < b.0) {
                    best = Some((ssr, -c[3], kep));
                    best_leak.copy_from_slice(leak);
                }
            }
            let (_, k2, kep) = best?;
            for (o, l) in out.iter_mut().zip(best_leak.iter()) {
                *o += k2 * l;
            }
            Some((k2, kep))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Curves built exactly from the models: 12 non-leaky voxels (scaled
    /// copies of one first pass) and 3 leaky ones. `bsw` recovers K2 and
    /// restores the first pass; `bidirectional` also recovers an efflux
    /// rate of its grid.
    #[test]
    fn corrections_invert_their_models() {
        let nt = 60;
        let times: Vec<f64> = (0..nt).map(|i| i as f64 * 1.5).collect();
        let first: Vec<f64> = times
            .iter()
            .map(|t| {
                let x = (t - 15.0).max(0.0);
                x.powi(3) * (-x / 3.0).exp() / 50.0
            })
            .collect();
        let kep_true = KEP_MAX * (10.0f64 / 40.0).powi(2);
        for (method, kep) in [(bsw as LeakageFn, 0.0), (bidirectional, kep_true)] {
            let mut curves = Array2::zeros((15, nt));
            for v in 0..15 {
                let scale = 1.0 + 0.05 * (v % 4) as f64;
                for i in 0..nt {
                    curves[[v, i]] = scale * first[i];
                }
            }
            // The reference is the mean of the 12 non-leaky curves.
            let mut reference = vec![0.0; nt];
            for v in 0..12 {
                for i in 0..nt {
                    reference[i] += curves[[v, i]] / 12.0;
                }
            }
            let mut leak = vec![0.0; nt];
            exp_conv(&times, &reference, kep, &mut leak);
            let k2 = [0.002, 0.004, -0.001];
            for (j, k) in k2.iter().enumerate() {
                for i in 0..nt {
                    curves[[12 + j, i]] -= k * leak[i];
                }
            }
            let valid = vec![true; 15];
            let l = method(curves.view(), &valid, &times, &Device::cpu(Some(1))).unwrap();
            assert_eq!(l.reference_voxels.iter().filter(|u| **u).count(), 12);
            for (j, k) in k2.iter().enumerate() {
                let v = 12 + j;
                assert!((l.k2[v] - k).abs() < 1e-9, "{}: {} vs {k}", v, l.k2[v]);
                let scale = 1.0 + 0.05 * (v % 4) as f64;
                for i in 0..nt {
                    assert!((l.corrected[[v, i]] - scale * first[i]).abs() < 1e-9);
                }
                if let Some(kep_fit) = &l.kep {
                    assert!((kep_fit[v] - kep).abs() < 1e-12);
                }
            }
            assert!(l.k2[..12].iter().all(|k| k.abs() < 1e-9));
        }
        let e = bsw(
            Array2::zeros((1, 5)).view(),
            &[true],
            &[0.0, 1.0, 2.0, 3.0, 4.0],
            &Device::cpu(None),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at least 2 valid voxels"), "{e}");
    }
}
