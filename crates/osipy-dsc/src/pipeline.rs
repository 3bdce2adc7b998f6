//! The DSC modality on the seam ([`osipy_io::ModalityDef`]): a T2\*-weighted
//! bolus-passage series to CBV, CBF, MTT, TTP and Tmax maps.

use crate::deconv::{DeconvInput, DeconvSettings, Deconvolution};
use crate::gamma::remove_recirculation;
use crate::leakage::LeakageCorrection;
use crate::perfusion::{cbv_ratio, hematocrit_density_factor, normalize, peak_index, Normalizer};
use crate::phantom::{generate, DscPhantomSpec};
use crate::signal::{baseline_before, check_baseline, mean_curve, signal_to_delta_r2, BolusArrival};
use crate::vascular::MAX_SHAPE;
use ndarray::{Array2, Array3, ArrayView4};
use osipy_aif::{detect_aif, DetectOptions};
use osipy_core::QualityCode;
use osipy_core::{MapSet, OsipyError, ParameterMap, Provenance, Registry, Result, Unit};
use osipy_fitting::LmSettings;
use osipy_io::dro::{compare, DroRow};
use osipy_io::{
    aif_plot, check_positive, check_seconds, choice_names, is_nifti, voxel_curves, Choice, CurveAxes,
    Dataset, DemoCase, DemoFile, InputKind, InputSpec, Inputs, ModalityDef, ModalityInfo, Outputs,
    RunContext, Volume, TIME_FILE,
};
use serde::{Deserialize, Serialize};

/// The DSC modality.
#[derive(Debug, Clone, Copy)]
pub struct Dsc;

/// Where the AIF comes from (`pipeline.aif_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DscAifSource {
    /// The shared detector on deltaR2\* (chosen voxels written to `aif_voxels.nii.gz`).
    Detect,
    /// Read from `data.aif_file`: time (s), arterial deltaR2\* (1/s).
    Manual,
}

impl Choice for DscAifSource {
    const ALL: &'static [Self] = &[DscAifSource::Detect, DscAifSource::Manual];
}

/// DSC pipeline settings (`[pipeline]` with `modality = "dsc"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DscConfig {
    /// Echo time (s); else `EchoTime` of the series' JSON sidecar.
    pub te: Option<f64>,
    /// Deconvolution method (registry `dsc_deconvolution`).
    pub deconvolution_method: String,
    /// Relative singular-value threshold of `ssvd` / `csvd` (default per method).
    pub svd_threshold: Option<f64>,
    /// Oscillation-index target of `osvd`.
    pub oscillation_index: f64,
    /// Fixed Tikhonov lambda relative to the largest singular value; unset: per-voxel GCV.
    pub tikhonov_lambda: Option<f64>,
    /// Shape of the gamma transit-time distribution of `vascular_model`
    /// (whole number; 1: exponential residue).
    pub transit_shape: u32,
    /// Correct tissue curves for contrast leakage before CBV and deconvolution.
    pub apply_leakage_correction: bool,
    /// Leakage correction (registry `dsc_leakage`).
    pub leakage_method: String,
    /// Replace tissue and arterial curves by gamma variates fitted to their
    /// first pass.
    pub recirculation_removal: bool,
    /// Pre-bolus frames averaged into S0; unset: frames before the detected arrival.
    pub baseline_frames: Option<usize>,
    /// Bolus-arrival detector (registry `dsc_bolus_arrival`), when `baseline_frames` is unset.
    pub bolus_arrival: String,
    /// AIF source.
    pub aif_source: DscAifSource,
    /// Hematocrit of large vessels.
    pub hematocrit_large_vessel: f64,
    /// Hematocrit of small vessels.
    pub hematocrit_small_vessel: f64,
    /// Brain tissue density (g/ml).
    pub tissue_density: f64,
    /// Reference-region statistic for rCBV / rCBF (registry `dsc_normalizers`).
    pub normalization: String,
}

impl Default for DscConfig {
    fn default() -> Self {
        DscConfig {
            te: None,
            deconvolution_method: "osvd".into(),
            svd_threshold: None,
            oscillation_index: 0.035,
            tikhonov_lambda: None,
            transit_shape: 1,
            apply_leakage_correction: false,
            leakage_method: "bsw".into(),
            recirculation_removal: false,
            baseline_frames: None,
            bolus_arrival: "signal_drop".into(),
            aif_source: DscAifSource::Detect,
            hematocrit_large_vessel: 0.45,
            hematocrit_small_vessel: 0.25,
            tissue_density: 1.04,
            normalization: "mean".into(),
        }
    }
}

const UNITS: &str = "times in seconds, CBF in ml/100g/min, CBV in ml/100g";

const DOCS: &[(&str, &str)] = &[
    ("te", "echo time in s (else EchoTime of the series' JSON sidecar)"),
    ("deconvolution_method", "{dsc_deconvolution}"),
    (
        "svd_threshold",
        "fraction of the largest singular value (ssvd 0.2, csvd 0.1)",
    ),
    ("oscillation_index", "osvd target (Wu et al. 2003)"),
    (
        "tikhonov_lambda",
        "fraction of the largest singular value; unset: GCV per voxel",
    ),
    (
        "transit_shape",
        "vascular_model: gamma transit-time shape, whole number (1: exponential residue)",
    ),
    (
        "apply_leakage_correction",
        "correct tissue curves for contrast leakage (K2 map written)",
    ),
    ("leakage_method", "{dsc_leakage}"),
    (
        "recirculation_removal",
        "fit gamma variates to the first passes (AIF and tissue) and use them",
    ),
    (
        "baseline_frames",
        "pre-bolus frames for S0; unset: before the detected arrival",
    ),
    ("bolus_arrival", "{dsc_bolus_arrival}"),
    ("aif_source", "{choices}"),
    ("hematocrit_large_vessel", "kH = (1 - large) / (1 - small)"),
    ("hematocrit_small_vessel", "applied to CBV and CBF alike"),
    ("tissue_density", "g/ml"),
    (
        "normalization",
        "rCBV / rCBF in data.reference_mask: {dsc_normalizers}",
    ),
];

const INPUTS: &[InputSpec] = &[
    InputSpec {
        role: "dsc",
        description: "4D T2*-weighted series; discovered: a NIfTI named *dsc*",
        example: "\"dsc.nii.gz\"",
        kind: InputKind::File,
        discover: Some(|n| is_nifti(n) && n.contains("dsc") && !n.contains("mask")),
    },
    InputSpec {
        role: "aif_file",
        description:
            "columns: time (s), arterial deltaR2* (1/s), one row per frame; discovered: aif.csv|tsv|txt",
        example: "\"aif.txt\"",
        kind: InputKind::File,
        discover: Some(|n| matches!(n, "aif.csv" | "aif.tsv" | "aif.txt")),
    },
    TIME_FILE,
    InputSpec {
        role: "reference_mask",
        description: "3D mask of normal-appearing tissue for rCBV / rCBF (inside data.mask)",
        example: "\"nawm.nii.gz\"",
        kind: InputKind::File,
        discover: None,
    },
];

/// Largest echo time accepted (s); larger values are taken for milliseconds.
const MAX_TE: f64 = 0.5;

impl ModalityDef for Dsc {
    type Config = DscConfig;
    const INFO: ModalityInfo = ModalityInfo::new("dsc", "DSC-MRI", UNITS, INPUTS, DOCS);

    fn config_example() -> DscConfig {
        DscConfig {
            te: Some(0.03),
            svd_threshold: Some(0.2),
            tikhonov_lambda: Some(0.1),
            baseline_frames: Some(10),
            ..DscConfig::default()
        }
    }

    fn validate(p: &DscConfig, reg: &Registry) -> Result<()> {
        reg.get::<Deconvolution>(&p.deconvolution_method)?;
        reg.get::<BolusArrival>(&p.bolus_arrival)?;
        reg.get::<Normalizer>(&p.normalization)?;
        reg.get::<LeakageCorrection>(&p.leakage_method)?;
        check_seconds("pipeline.te", p.te, MAX_TE, "0.03")?;
        if let Some(t) = p.svd_threshold {
            if !(t > 0.0 && t < 1.0) {
                return Err(OsipyError::metadata(
                    "pipeline.svd_threshold",
                    t,
                    "a fraction in (0, 1), e.g. 0.2",
                ));
            }
        }
        check_positive("pipeline.oscillation_index", p.oscillation_index, "0.035")?;
        if let Some(l) = p.tikhonov_lambda {
            check_positive("pipeline.tikhonov_lambda", l, "0.1")?;
        }
        if !(1..=MAX_SHAPE).contains(&p.transit_shape) {
            return Err(OsipyError::metadata(
                "pipeline.transit_shape",
                p.transit_shape,
                format!("a whole number from 1 (exponential residue) to {MAX_SHAPE}"),
            ));
        }
        hematocrit_density_factor(
            p.hematocrit_large_vessel,
            p.hematocrit_small_vessel,
            p.tissue_density,
        )?;
        Ok(())
    }

    fn describe(p: &DscConfig) -> String {
        format!("deconvolution_method {}", p.deconvolution_method)
    }

    fn run(p: &DscConfig, inputs: &Inputs, ctx: &mut RunContext, reg: &Registry) -> Result<Outputs> {
        let mut ds = Dataset::load(inputs, &INPUTS[0])?;
        let times = ds.frame_times(inputs, "DSC deconvolution")?;
        crate::deconv::uniform_step(&times)?;
        let te = match (p.te, ds.acquisition.echo_time.as_ref()) {
            (Some(te), _) => te,
            (None, Some(s)) => {
                check_seconds(&s.source, Some(s.value), MAX_TE, "0.03")?;
                s.value
            }
            (None, None) => {
                return Err(OsipyError::MissingParameter {
                    name: "pipeline.te".into(),
                    needed_for: "signal to deltaR2*".into(),
                    hint: "echo time in seconds, e.g. te = 0.03 (or EchoTime in the series' JSON sidecar)"
                        .into(),
                })
            }
        };
        let grid = ds.grid();
        let (n_vox, nt) = (ds.n_voxels(), ds.n_volumes());
        let mask = ds.flat_mask();
        let reference = match inputs.volume("reference_mask", grid)? {
            Some(r) => {
                let r: Vec<bool> = r.iter().map(|v| *v != 0.0).collect();
                if let Some(v) = r.iter().zip(&mask).position(|(r, m)| *r && !*m) {
                    return Err(OsipyError::data(
                        "data.reference_mask",
                        format!("voxel {:?} set outside data.mask", unflat(v, grid)),
                        "a reference region inside the analysis mask",
                    ));
                }
                if !r.iter().any(|x| *x) {
                    return Err(OsipyError::data(
                        "data.reference_mask",
                        "no voxel set",
                        "a non-empty reference region",
                    ));
                }
                Some(r)
            }
            None => None,
        };
        ctx.lap("read");

        let signal = ds.voxels()?;
        let baseline = match p.baseline_frames {
            Some(b) => b,
            None => {
                let detect = reg.get::<BolusArrival>(&p.bolus_arrival)?.0;
                let m = mean_curve(signal, &mask).ok_or_else(|| {
                    OsipyError::data(
                        "DSC series in the mask",
                        "no voxel with finite samples",
                        "at least one valid voxel",
                    )
                })?;
                let arrival = detect(&m).ok_or_else(|| {
                    OsipyError::data(
                        "bolus arrival in the mean signal of the mask",
                        "no signal drop found",
                        "a series with a bolus passage; or set pipeline.baseline_frames",
                    )
                })?;
                let b = baseline_before(arrival);
                tracing::info!(arrival, baseline = b, "bolus arrival detected");
                b
            }
        };
        check_baseline(baseline, nt)?;
        let dr2 = signal_to_delta_r2(signal, Some(&mask), te, baseline, &ctx.device)?;
        ctx.lap("delta_r2");

        let mut volumes = Vec::new();
        let mut aif_voxels = Vec::new();
        let mut aif = match p.aif_source {
            DscAifSource::Detect => {
                let view = dr2
                    .curves
                    .view()
                    .into_shape_with_order((grid[0], grid[1], grid[2], nt))
                    .map_err(|e| OsipyError::data("deltaR2*", e.to_string(), "a 4D array"))?;
                let valid = Array3::from_shape_fn(grid, |(x, y, z)| {
                    let v = (x * grid[1] + y) * grid[2] + z;
                    mask[v] && dr2.status[v].is_none()
                });
                let d = detect_aif(
                    ArrayView4::from(view),
                    &times,
                    Some(valid.view()),
                    &DetectOptions::default(),
                )?;
                let mut chosen = Array3::<f64>::zeros(grid);
                for v in &d.voxels {
                    chosen[v.index] = 1.0;
                }
                volumes.push(("aif_voxels.nii.gz".to_string(), Volume::Map(chosen)));
                aif_voxels = d.voxels.iter().map(|v| v.index).collect();
                tracing::info!(voxels = ?aif_voxels, "AIF detected");
                d.curve
            }
            DscAifSource::Manual => manual_aif(inputs, &times)?,
        };
        ctx.lap("aif");

        let factor = hematocrit_density_factor(
            p.hematocrit_large_vessel,
            p.hematocrit_small_vessel,
            p.tissue_density,
        )?;
        let fit_mask: Vec<bool> = (0..n_vox).map(|v| mask[v] && dr2.status[v].is_none()).collect();
        let mut first_pass_failed: Vec<Option<QualityCode>> = vec![None; n_vox];
        let leakage = if p.apply_leakage_correction {
            let correct = reg.get::<LeakageCorrection>(&p.leakage_method)?.0;
            let l = correct(dr2.curves.view(), &fit_mask, &times, &ctx.device)?;
            volumes.push((
                "leakage_reference_voxels.nii.gz".to_string(),
                Volume::Map(Array3::from_shape_fn(grid, |(x, y, z)| {
                    f64::from(u8::from(l.reference_voxels[(x * grid[1] + y) * grid[2] + z]))
                })),
            ));
            ctx.lap("leakage");
            Some(l)
        } else {
            None
        };
        let curves = leakage.as_ref().map_or(dr2.curves.view(), |l| l.corrected.view());
        let mut fit_mask = fit_mask;
        let first_pass = if p.recirculation_removal {
            let (c, st) =
                remove_recirculation(curves, &fit_mask, &times, LmSettings::default(), &ctx.device)?;
            for (v, q) in st.iter().enumerate() {
                if fit_mask[v] && !q.is_valid() {
                    fit_mask[v] = false;
                    first_pass_failed[v] = Some(*q);
                }
            }
            let a = Array2::from_shape_vec((1, nt), aif.clone())
                .map_err(|e| OsipyError::data("AIF", e.to_string(), "one value per frame"))?;
            let (fa, st) =
                remove_recirculation(a.view(), &[true], &times, LmSettings::default(), &ctx.device)?;
            if !st[0].is_valid() {
                return Err(OsipyError::data(
                    "gamma-variate fit of the AIF first pass",
                    st[0].name(),
                    "a converged fit; set pipeline.recirculation_removal = false",
                ));
            }
            aif = fa.row(0).to_vec();
            ctx.lap("recirculation");
            Some(c)
        } else {
            None
        };
        let curves = first_pass.as_ref().map_or(curves, |c| c.view());
        let settings = DeconvSettings {
            svd_threshold: p.svd_threshold,
            oscillation_index: p.oscillation_index,
            tikhonov_lambda: p.tikhonov_lambda,
            transit_shape: p.transit_shape,
            progress: Some(ctx.progress.counter()),
            ..DeconvSettings::default()
        };
        ctx.progress.start(n_vox);
        let method = reg.get::<Deconvolution>(&p.deconvolution_method)?.0;
        let input = DeconvInput {
            curves,
            mask: &fit_mask,
            aif: &aif,
            times: &times,
        };
        let d = method(&input, &settings, &ctx.device)?;
        ctx.lap("fit");

        let mut status = d.status.clone();
        for v in 0..n_vox {
            if let Some(q) = dr2.status[v].or(first_pass_failed[v]) {
                status[v] = q;
            }
        }
        let valid = |v: usize| status[v].is_valid();
        let nan_unless = |v: usize, x: f64| if valid(v) { x } else { f64::NAN };
        let cbv: Vec<f64> = (0..n_vox)
            .map(|v| {
                nan_unless(
                    v,
                    100.0 * factor * cbv_ratio(curves.row(v).as_slice().unwrap_or(&[]), &aif, &times),
                )
            })
            .collect();
        let cbf: Vec<f64> = d
            .flow
            .iter()
            .enumerate()
            .map(|(v, f)| nan_unless(v, 6000.0 * factor * f))
            .collect();
        let cbf_se = d.flow_se.as_ref().map(|se| {
            (0..n_vox)
                .map(|v| nan_unless(v, 6000.0 * factor * se[v]))
                .collect::<Vec<f64>>()
        });
        // A fitted MTT (model-based methods) replaces CBV / CBF.
        let fitted_mtt = d.extra.iter().find(|e| e.name == "MTT");
        let mtt: Vec<f64> = (0..n_vox)
            .map(|v| nan_unless(v, fitted_mtt.map_or(60.0 * cbv[v] / cbf[v], |m| m.values[v])))
            .collect();
        let ttp: Vec<f64> = (0..n_vox)
            .map(|v| {
                let c = dr2.curves.row(v);
                let peak = c.as_slice().and_then(peak_index);
                nan_unless(v, peak.map_or(f64::NAN, |i| times[i] - times[0]))
            })
            .collect();
        let quality = Array3::from_shape_vec(grid, status.clone())
            .map_err(|e| OsipyError::data("quality", e.to_string(), "the grid"))?;
        let provenance = Provenance::default()
            .with_method("deconvolution", &p.deconvolution_method)
            .with_method(
                "aif_source",
                &choice_names::<DscAifSource>()[p.aif_source as usize],
            )
            .with_setting("te_s", te)
            .with_setting("baseline_frames", baseline as f64)
            .with_setting("kH_over_rho", factor);
        let provenance = if p.recirculation_removal {
            provenance.with_method("recirculation", "gamma_variate")
        } else {
            provenance
        };
        let provenance = match &leakage {
            Some(_) => provenance.with_method("leakage", &p.leakage_method),
            None => provenance,
        };
        let provenance = if fitted_mtt.is_some() {
            provenance.with_setting("transit_shape", f64::from(p.transit_shape))
        } else {
            provenance
        };
        let to_grid = |v: Vec<f64>| {
            Array3::from_shape_vec(grid, v).map_err(|e| OsipyError::data("map", e.to_string(), "the grid"))
        };
        let mut maps = vec![
            ParameterMap::new(
                "CBV",
                "CBV",
                Unit::Ml100g,
                to_grid(cbv.clone())?,
                quality.clone(),
                None,
                provenance.clone(),
            )?,
            ParameterMap::new(
                "CBF",
                "CBF",
                Unit::Ml100gMin,
                to_grid(cbf.clone())?,
                quality.clone(),
                cbf_se.map(to_grid).transpose()?,
                provenance.clone(),
            )?,
            ParameterMap::new(
                "MTT",
                "MTT",
                Unit::Seconds,
                to_grid(mtt)?,
                quality.clone(),
                fitted_mtt.map(|m| to_grid(m.std_errors.clone())).transpose()?,
                provenance.clone(),
            )?,
            ParameterMap::new(
                "TTP",
                "TTP",
                Unit::Seconds,
                to_grid(ttp)?,
                quality.clone(),
                None,
                provenance.clone(),
            )?,
            ParameterMap::new(
                "Tmax",
                "T_max",
                Unit::Seconds,
                to_grid(d.tmax.clone())?,
                quality.clone(),
                None,
                provenance.clone(),
            )?,
        ];
        if let Some(l) = &leakage {
            let prov = provenance.clone();
            let mut extra = vec![("K2", &l.k2)];
            if let Some(kep) = &l.kep {
                extra.push(("kep", kep));
            }
            for (name, values) in extra {
                let values = (0..n_vox).map(|v| nan_unless(v, values[v])).collect();
                maps.push(ParameterMap::new(
                    name,
                    name,
                    Unit::PerSecond,
                    to_grid(values)?,
                    quality.clone(),
                    None,
                    prov.clone(),
                )?);
            }
        }
        for e in d.extra.iter().filter(|e| e.name != "MTT") {
            maps.push(ParameterMap::new(
                e.name,
                e.name,
                e.unit,
                to_grid(e.values.clone())?,
                quality.clone(),
                Some(to_grid(e.std_errors.clone())?),
                provenance.clone(),
            )?);
        }
        if let Some(region) = &reference {
            let norm = reg.get::<Normalizer>(&p.normalization)?;
            let prov = provenance.clone().with_method("normalization", &p.normalization);
            for (name, values) in [("rCBV", &cbv), ("rCBF", &cbf)] {
                let r = normalize(values, region, norm, &name[1..])?;
                maps.push(ParameterMap::new(
                    name,
                    name,
                    Unit::Dimensionless,
                    to_grid(r)?,
                    quality.clone(),
                    None,
                    prov.clone(),
                )?);
            }
        }
        let r_squared = to_grid(d.r2.clone().unwrap_or_else(|| vec![f64::NAN; n_vox]))?;
        let aif_source = if aif_voxels.is_empty() {
            "from data.aif_file".to_string()
        } else {
            format!("detected from {} voxels", aif_voxels.len())
        };
        let mut plots = vec![aif_plot(
            &times,
            &aif,
            "time (s)",
            "ΔR2* (1/s)",
            &aif_source,
            aif_voxels,
        )];
        // The report's voxels (ranked by R² where the method fits a model,
        // by CBF otherwise) are deconvolved again on their own, asking the
        // method for its fitted curve: per-voxel results do not depend on
        // the other voxels, so this is the fit the maps come from.
        let rank = match (&d.r2, maps.iter().find(|m| m.name == "CBF")) {
            (Some(_), _) | (None, None) => ("R²", r_squared.view()),
            (None, Some(cbf)) => ("CBF", cbf.values.view()),
        };
        let picked: Vec<usize> = osipy_io::curves::representative_voxels(rank, &mask, &ctx.report_voxels)?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let fitted = if picked.is_empty() {
            None
        } else {
            let sub = Array2::from_shape_fn((picked.len(), nt), |(i, t)| curves[[picked[i], t]]);
            let sub_mask: Vec<bool> = picked
                .iter()
                .map(|&v| fit_mask[v] && status[v].is_valid())
                .collect();
            let again = DeconvSettings {
                fitted_curves: true,
                progress: None,
                ..settings.clone()
            };
            let input = DeconvInput {
                curves: sub.view(),
                mask: &sub_mask,
                aif: &aif,
                times: &times,
            };
            method(&input, &again, &ctx.device)?.fitted
        };
        let axes = CurveAxes {
            quantity: "ΔR2*",
            x_label: "time (s)",
            y_label: "ΔR2* (1/s)",
            x: &times,
            rank,
        };
        plots.extend(voxel_curves(&mask, &ctx.report_voxels, axes, |v| {
            let fit = picked
                .iter()
                .position(|p| *p == v)
                .zip(fitted.as_ref())
                .map_or_else(Vec::new, |(i, f)| f.row(i).to_vec());
            Some((curves.row(v).to_vec(), fit))
        })?);
        Ok(Outputs {
            maps: MapSet {
                maps,
                r_squared,
                quality,
            },
            volumes,
            shape: [grid[0], grid[1], grid[2], nt],
            mask,
            inputs: ds.files.clone(),
            geometry: ds.geometry,
            plots,
        })
    }

    fn demo() -> Result<DemoCase> {
        let spec = DscPhantomSpec {
            shape: [16, 16, 2],
            snr: Some(100.0),
            seed: 2026,
            ..DscPhantomSpec::default()
        };
        let ph = generate(&spec)?;
        let aif: String = ph
            .times
            .iter()
            .zip(&ph.aif)
            .map(|(t, a)| format!("{t} {a}\n"))
            .collect();
        Ok(DemoCase {
            title: format!(
                "DSC demo: phantom {}x{}x{} voxels x {} frames (dt {} s, TE {} s), Gaussian noise SNR 100",
                spec.shape[0], spec.shape[1], spec.shape[2], spec.frames, spec.dt, spec.te
            ),
            about: "arterial deltaR2* in aif.txt, gamma residue (shape 3), vascular_model fit".into(),
            files: vec![
                ("dsc.nii.gz".into(), DemoFile::Series(ph.signal.clone(), spec.dt)),
                ("aif.txt".into(), DemoFile::Text(aif)),
            ],
            config: format!(
                "# Written by `osipy demo dsc`.\nmodality = \"dsc\"\n\n[pipeline]\nte = {}\ndeconvolution_method = \"vascular_model\"\ntransit_shape = 3\naif_source = \"manual\"\n\n[data]\ndsc = \"dsc.nii.gz\"\naif_file = \"aif.txt\"\n",
                spec.te
            ),
            truth: vec![
                ("CBF".into(), ph.cbf.clone(), 1),
                ("CBV".into(), ph.cbv.clone(), 2),
                ("MTT".into(), ph.mtt.clone(), 2),
            ],
        })
    }

    fn phantom_checks(reg: &Registry) -> Result<Vec<DroRow>> {
        crate::validation::phantom_rows(reg)
    }

    fn choices() -> Vec<(&'static str, Vec<String>)> {
        vec![("aif_source", choice_names::<DscAifSource>())]
    }
}

/// The manual AIF: one row per frame, at the frame times.
fn manual_aif(inputs: &Inputs, times: &[f64]) -> Result<Vec<f64>> {
    let path = inputs
        .require(
            "aif_file",
            "aif_source = \"manual\"",
            "columns time (s) and arterial deltaR2* (1/s), one row per frame",
        )?
        .display()
        .to_string();
    let rows = inputs.table("aif_file", 2)?.unwrap_or_default();
    if rows.len() != times.len() {
        return Err(OsipyError::data(
            format!("rows of data.aif_file {path}"),
            rows.len().to_string(),
            format!("{}, one per frame of the series", times.len()),
        ));
    }
    let dt = times.get(1).map_or(1.0, |t| t - times[0]);
    if let Some((r, t)) = rows
        .iter()
        .zip(times)
        .find(|(r, t)| (r[0] - **t).abs() > 0.01 * dt)
    {
        return Err(OsipyError::data(
            format!("a time in data.aif_file {path} (s)"),
            r[0].to_string(),
            format!("the frame time {t} s of the series (the AIF must be sampled at the frames)"),
        ));
    }
    if let Some(bad) = rows.iter().map(|r| r[1]).find(|v| !v.is_finite()) {
        return Err(OsipyError::data(
            format!("a deltaR2* value in data.aif_file {path}"),
            bad.to_string(),
            "finite numbers",
        ));
    }
    Ok(rows.iter().map(|r| r[1]).collect())
}

fn unflat(v: usize, grid: [usize; 3]) -> [usize; 3] {
    [v / (grid[1] * grid[2]), (v / grid[2]) % grid[1], v % grid[2]]
}

/// Error statistics of a map against its truth (used by validation).
pub(crate) fn stats(name: &str, est: &[f64], truth: &Array3<f64>) -> Result<osipy_io::dro::ErrorStats> {
    let e = Array3::from_shape_vec(truth.dim(), est.to_vec())
        .map_err(|e| OsipyError::data("map", e.to_string(), "the grid"))?;
    compare(name, &e, truth, None)
}
