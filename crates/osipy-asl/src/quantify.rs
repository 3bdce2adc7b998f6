//! Quantification methods (registry `asl_quantification`): ΔM / M0 per
//! voxel and PLD to CBF (and ATT, aBV, aATT for multi-PLD fits).

use crate::kinetics::{single_pld_cbf, LabelingScheme, Physio, Timing};
use crate::multi_pld::BuxtonModel;
use ndarray::ArrayView2;
use osipy_backend::Device;
use osipy_core::{Extension, KindInfo, OsipyError, QualityCode, Result, Unit};
use osipy_fitting::{fit_batch, FitOptions, Model};

/// What a quantification reads.
#[derive(Debug, Clone)]
pub struct QuantInput<'a> {
    /// ΔM / M0, voxels x PLD groups.
    pub dm_over_m0: ArrayView2<'a, f64>,
    /// Voxels to quantify.
    pub mask: &'a [bool],
    /// Timing of each PLD group.
    pub timings: &'a [Timing],
    /// Labeling scheme.
    pub scheme: LabelingScheme,
    /// Constants (α after background suppression).
    pub physio: Physio,
    /// Fit the arterial (macrovascular) component too (multi-PLD).
    pub arterial: bool,
    /// LM settings, bounds and progress of fitted methods.
    pub fit: &'a FitOptions,
}

/// One output map.
#[derive(Debug, Clone)]
pub struct QuantMap {
    /// File name and OSIPI name (`CBF`, `ATT`, `aBV`, `aATT`).
    pub name: &'static str,
    /// Unit.
    pub unit: Unit,
    /// Value per voxel.
    pub values: Vec<f64>,
    /// Standard error per voxel (fitted methods).
    pub std_errors: Option<Vec<f64>>,
}

/// What a quantification produced.
#[derive(Debug, Clone)]
pub struct QuantOutput {
    /// Maps, CBF first.
    pub maps: Vec<QuantMap>,
    /// Quality per voxel.
    pub status: Vec<QualityCode>,
    /// R^2 per voxel (fitted methods).
    pub r_squared: Option<Vec<f64>>,
}

/// A quantification method; `scheme` is the labeling it is for (`None`:
/// any).
#[derive(Debug, Clone, Copy)]
pub struct Quantification {
    /// The scheme the formula is for.
    pub scheme: Option<LabelingScheme>,
    /// Whether it needs several PLDs.
    pub multi_pld: bool,
    /// The method.
    pub run: fn(&QuantInput<'_>, &Device) -> Result<QuantOutput>,
}

impl Extension for Quantification {
    const KIND: KindInfo = KindInfo {
        id: "asl_quantification",
        label: "ASL quantification models",
        config_key: "pipeline.quantification_model",
    };
}

/// The single-PLD consensus formula of `input.scheme` on the one PLD
/// (`pcasl_single_pld`, `casl_single_pld`, `pasl_single_pld`: the entry's
/// scheme must be the data's).
pub fn single_pld(input: &QuantInput<'_>, _: &Device) -> Result<QuantOutput> {
    let [t] = input.timings else {
        return Err(OsipyError::data(
            format!("PLDs for {}_single_pld", input.scheme.name()),
            format!("{} distinct PLDs", input.timings.len()),
            "one PLD; for several use quantification_model = \"buxton_multi_pld\"",
        ));
    };
    let n = input.mask.len();
    let mut cbf = vec![f64::NAN; n];
    let mut status = vec![QualityCode::NotFitted; n];
    // The formula is linear in ΔM / M0: one factor for every voxel.
    let factor = single_pld_cbf(input.scheme, 1.0, *t, &input.physio);
    let voxels = cbf.iter_mut().zip(status.iter_mut()).zip(input.mask);
    for (((c, q), inside), dm) in voxels.zip(input.dm_over_m0.column(0)) {
        if *inside {
            *c = factor * dm;
            *q = if c.is_finite() {
                QualityCode::Converged
            } else {
                QualityCode::NonFiniteInput
            };
        }
    }
    Ok(QuantOutput {
        maps: vec![QuantMap {
            name: "CBF",
            unit: Unit::Ml100gMin,
            values: cbf,
            std_errors: None,
        }],
        status,
        r_squared: None,
    })
}

/// `buxton_multi_pld`: the general kinetic model fitted per voxel by the
/// shared LM engine (grid start over ATT, see [`BuxtonModel`]).
pub fn buxton_multi_pld(input: &QuantInput<'_>, device: &Device) -> Result<QuantOutput> {
    let model = BuxtonModel::new(input.scheme, input.timings.to_vec(), input.physio, input.arterial)?;
    let fit = fit_batch(&model, input.dm_over_m0, Some(input.mask), input.fit, device)?;
    let maps = model
        .params()
        .iter()
        .enumerate()
        .map(|(j, p)| QuantMap {
            name: p.name,
            unit: p.unit,
            values: fit.params.column(j).to_vec(),
            std_errors: Some(fit.std_errors.column(j).to_vec()),
        })
        .collect();
    Ok(QuantOutput {
        maps,
        status: fit.status.to_vec(),
        r_squared: Some(fit.r2.to_vec()),
    })
}
