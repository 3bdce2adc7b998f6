//! The ASL modality on the seam ([`osipy_io::ModalityDef`]): a
//! label/control series (and M0) to CBF, ATT and aBV maps.

use crate::context::{
    parse_aslcontext, per_volume, volume_types, DifferenceInput, DifferenceMethod, Groups, LabelControlOrder,
    VolumeType,
};
use crate::kinetics::{effective_efficiency, LabelingScheme, Physio, WHITE_PAPER_3T};
use crate::m0::{M0Calibration, M0Input, M0Settings, ReferenceTissue};
use crate::multi_pld::{param_specs, BuxtonModel};
use crate::phantom::{generate, AslPhantomSpec};
use crate::quantify::{QuantInput, Quantification};
use ndarray::{Array2, Array3, Array4, Axis};
use osipy_core::{MapSet, OsipyError, ParameterMap, Provenance, QualityCode, Registry, Result};
use osipy_fitting::{named_bounds, FitOptions, LmSettings, Model};
use osipy_io::curves::voxel_xyz;
use osipy_io::dro::DroRow;
use osipy_io::{
    check_positive, check_seconds, choice_names, is_nifti, voxel_curves, CurveAxes, Dataset, DemoCase,
    DemoFile, InputKind, InputSpec, Inputs, ModalityDef, ModalityInfo, Outputs, RunContext, Volume,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The ASL modality.
#[derive(Debug, Clone, Copy)]
pub struct Asl;

/// One number for every volume, or a list (per volume, per label/control
/// volume or per difference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// The same for every volume.
    One(f64),
    /// A list.
    Many(Vec<f64>),
}

impl OneOrMany {
    fn values(&self) -> Vec<f64> {
        match self {
            OneOrMany::One(v) => vec![*v],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// ASL pipeline settings (`[pipeline]` with `modality = "asl"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AslConfig {
    /// Labeling scheme; else `ArterialSpinLabelingType` of the sidecar.
    pub labeling_scheme: Option<LabelingScheme>,
    /// One post-labeling delay (s; TI for PASL).
    pub pld: Option<f64>,
    /// Post-labeling delays (s): per volume, per label/control volume or per pair.
    pub plds: Option<Vec<f64>>,
    /// Label duration (s) of (p)CASL: one value, or one per volume / pair.
    pub label_duration: Option<OneOrMany>,
    /// Bolus duration TI1 (s) of PASL with QUIPSS II / Q2TIPS.
    pub ti1: Option<f64>,
    /// T1 of arterial blood (s).
    pub t1_blood: f64,
    /// T1 of tissue (s).
    pub t1_tissue: f64,
    /// Blood-brain partition coefficient λ (ml/g).
    pub partition_coefficient: f64,
    /// Labeling efficiency α before background suppression (default per scheme).
    pub labeling_efficiency: Option<f64>,
    /// Number of background-suppression pulses.
    pub background_suppression_pulses: Option<u32>,
    /// Inversion efficiency of each background-suppression pulse.
    pub background_suppression_efficiency: Option<f64>,
    /// Label/control difference (registry `asl_difference`).
    pub difference_method: String,
    /// Volume order when there is no `aslcontext.tsv`.
    pub label_control_order: LabelControlOrder,
    /// Leading volumes to discard.
    pub dummy_volumes: usize,
    /// M0 calibration (registry `asl_m0`).
    pub m0_method: String,
    /// One M0 for every voxel (`single`).
    pub m0_value: Option<f64>,
    /// TR of the M0 image (s), for its saturation correction.
    pub m0_tr: Option<f64>,
    /// TE of the M0 image (s), for `reference_region`.
    pub m0_te: Option<f64>,
    /// Reference tissue of `reference_region`.
    pub reference_tissue: ReferenceTissue,
    /// T1 of the reference tissue (s; default per tissue).
    pub reference_t1: Option<f64>,
    /// T2\* of the reference tissue (s; default per tissue).
    pub reference_t2star: Option<f64>,
    /// Partition coefficient of the reference tissue (ml/g; default per tissue).
    pub reference_partition_coefficient: Option<f64>,
    /// Quantification (registry `asl_quantification`); unset: by PLD count and scheme.
    pub quantification_model: Option<String>,
    /// Fit a macrovascular (arterial) component (multi-PLD).
    pub arterial_component: bool,
    /// Multi-PLD fitting.
    pub fitting: AslFittingConfig,
}

impl Default for AslConfig {
    fn default() -> Self {
        AslConfig {
            labeling_scheme: None,
            pld: None,
            plds: None,
            label_duration: None,
            ti1: None,
            t1_blood: WHITE_PAPER_3T.t1_blood,
            t1_tissue: WHITE_PAPER_3T.t1_tissue,
            partition_coefficient: WHITE_PAPER_3T.lambda,
            labeling_efficiency: None,
            background_suppression_pulses: None,
            background_suppression_efficiency: None,
            difference_method: "pairwise".into(),
            label_control_order: LabelControlOrder::ControlLabel,
            dummy_volumes: 0,
            m0_method: "voxelwise".into(),
            m0_value: None,
            m0_tr: None,
            m0_te: None,
            reference_tissue: ReferenceTissue::Csf,
            reference_t1: None,
            reference_t2star: None,
            reference_partition_coefficient: None,
            quantification_model: None,
            arterial_component: false,
            fitting: AslFittingConfig::default(),
        }
    }
}

/// Multi-PLD fitting (`[pipeline.fitting]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AslFittingConfig {
    /// Maximum LM iterations per voxel.
    pub max_iterations: usize,
    /// Relative convergence tolerance (cost change and step).
    pub tolerance: f64,
    /// Per-parameter bounds `{ name = [lower, upper] }` for CBF, ATT, aBV, aATT.
    pub bounds: BTreeMap<String, [f64; 2]>,
}

impl Default for AslFittingConfig {
    fn default() -> Self {
        AslFittingConfig {
            max_iterations: 500,
            tolerance: 1e-6,
            bounds: BTreeMap::new(),
        }
    }
}

const UNITS: &str = "times in seconds, CBF in ml/100g/min, aBV as a fraction";

const DOCS: &[(&str, &str)] = &[
    (
        "labeling_scheme",
        "{choices}; unset: ArterialSpinLabelingType of the series' sidecar",
    ),
    (
        "pld",
        "post-labeling delay in s (PASL: inversion time TI); else PostLabelingDelay of the sidecar",
    ),
    (
        "plds",
        "several PLDs in s: one per volume, per label/control volume or per pair",
    ),
    (
        "label_duration",
        "(p)CASL label duration in s (or a list like plds); else LabelingDuration of the sidecar",
    ),
    (
        "ti1",
        "PASL bolus duration TI1 in s (QUIPSS II / Q2TIPS); else BolusCutOffDelayTime",
    ),
    ("t1_blood", "T1 of arterial blood in s (3 T)"),
    ("t1_tissue", "T1 of tissue in s (3 T grey matter)"),
    (
        "partition_coefficient",
        "blood-brain partition coefficient lambda in ml/g",
    ),
    (
        "labeling_efficiency",
        "alpha; unset: pcasl 0.85, casl 0.68, pasl 0.98 (or LabelingEfficiency of the sidecar)",
    ),
    (
        "background_suppression_pulses",
        "alpha is multiplied by the pulse efficiency to this power",
    ),
    (
        "background_suppression_efficiency",
        "inversion efficiency per pulse (0.95 when only the pulse count is given)",
    ),
    ("difference_method", "{asl_difference}"),
    (
        "label_control_order",
        "{choices}; used when there is no data.aslcontext",
    ),
    ("dummy_volumes", "leading volumes discarded"),
    ("m0_method", "{asl_m0}"),
    ("m0_value", "M0 of every voxel for m0_method = \"single\""),
    (
        "m0_tr",
        "TR of the M0 image in s: corrects its T1 saturation (else its sidecar's RepetitionTime)",
    ),
    (
        "m0_te",
        "TE of the M0 image in s, for reference_region (else its sidecar's EchoTime)",
    ),
    ("reference_tissue", "{choices}: sets the three defaults below"),
    ("reference_t1", "s; default csf 4.3, wm 1.0, gm 1.3"),
    ("reference_t2star", "s; default csf 0.4, wm 0.05, gm 0.05"),
    (
        "reference_partition_coefficient",
        "ml/g; default csf 1.15, wm 0.82, gm 0.98",
    ),
    (
        "quantification_model",
        "{asl_quantification}; unset: <scheme>_single_pld for one PLD, else buxton_multi_pld",
    ),
    (
        "arterial_component",
        "buxton_multi_pld also fits arterial blood volume aBV and its arrival aATT",
    ),
    ("fitting", "buxton_multi_pld fitting"),
    ("fitting.max_iterations", "LM iterations per voxel"),
    ("fitting.tolerance", "relative convergence tolerance"),
    (
        "fitting.bounds",
        "{ CBF = [0, 300], ATT = [0, 4], aBV = [0, 0.1], aATT = [0, 4] }",
    ),
];

const INPUTS: &[InputSpec] = &[
    InputSpec {
        role: "asl",
        description: "4D label/control (or deltaM) series; discovered: a NIfTI named *asl*",
        example: "\"asl.nii.gz\"",
        kind: InputKind::File,
        discover: Some(|n| is_nifti(n) && n.contains("asl") && !n.contains("mask") && !n.contains("m0")),
    },
    InputSpec {
        role: "m0",
        description: "M0 image (3D, or 4D averaged); discovered: a NIfTI named *m0*",
        example: "\"m0.nii.gz\"",
        kind: InputKind::File,
        discover: Some(|n| is_nifti(n) && n.contains("m0") && !n.contains("mask")),
    },
    InputSpec {
        role: "aslcontext",
        description:
            "ASL-BIDS volume types (control, label, m0scan, deltam, cbf, noRF); discovered: *aslcontext.tsv",
        example: "\"aslcontext.tsv\"",
        kind: InputKind::File,
        discover: Some(|n| n.ends_with("aslcontext.tsv")),
    },
    InputSpec {
        role: "m0_reference_mask",
        description: "3D mask of the reference tissue for m0_method = \"reference_region\"",
        example: "\"csf_mask.nii.gz\"",
        kind: InputKind::File,
        discover: None,
    },
];

/// Largest PLD, label duration or TR accepted (s); larger values are
/// taken for milliseconds.
const MAX_SECONDS: f64 = 20.0;

/// ASL-BIDS fields of the series' sidecar.
#[derive(Debug, Default)]
struct Sidecar {
    path: String,
    scheme: Option<String>,
    plds: Option<Vec<f64>>,
    label_duration: Option<Vec<f64>>,
    bolus_cutoff: Option<Vec<f64>>,
    m0_type: Option<String>,
    m0_estimate: Option<f64>,
    background_suppression: Option<bool>,
    bs_pulses: Option<u32>,
    efficiency: Option<f64>,
}

fn numbers(v: Option<&serde_json::Value>) -> Option<Vec<f64>> {
    match v? {
        serde_json::Value::Number(n) => n.as_f64().map(|x| vec![x]),
        serde_json::Value::Array(a) => a.iter().map(|x| x.as_f64()).collect(),
        _ => None,
    }
}

fn read_sidecar(inputs: &Inputs) -> Result<Sidecar> {
    let Some((path, j)) = inputs.sidecar("asl")? else {
        return Ok(Sidecar::default());
    };
    let s = |k: &str| j.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok(Sidecar {
        path: path.display().to_string(),
        scheme: s("ArterialSpinLabelingType"),
        plds: numbers(j.get("PostLabelingDelay")),
        label_duration: numbers(j.get("LabelingDuration")),
        bolus_cutoff: numbers(j.get("BolusCutOffDelayTime")),
        m0_type: s("M0Type"),
        m0_estimate: j.get("M0Estimate").and_then(|v| v.as_f64()),
        background_suppression: j.get("BackgroundSuppression").and_then(|v| v.as_bool()),
        bs_pulses: j
            .get("BackgroundSuppressionNumberPulses")
            .and_then(|v| v.as_u64())
            .map(|n| n as u32),
        efficiency: j.get("LabelingEfficiency").and_then(|v| v.as_f64()),
    })
}

fn check_list(field: &str, values: &[f64], example: &str) -> Result<()> {
    values
        .iter()
        .try_for_each(|v| check_seconds(field, Some(*v), MAX_SECONDS, example))
}

impl ModalityDef for Asl {
    type Config = AslConfig;
    const INFO: ModalityInfo = ModalityInfo::new("asl", "ASL-MRI", UNITS, INPUTS, DOCS);

    fn config_example() -> AslConfig {
        AslConfig {
            labeling_scheme: Some(LabelingScheme::Pcasl),
            pld: Some(1.8),
            plds: Some(vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0]),
            label_duration: Some(OneOrMany::One(1.8)),
            ti1: Some(0.8),
            labeling_efficiency: Some(0.85),
            background_suppression_pulses: Some(4),
            background_suppression_efficiency: Some(0.95),
            m0_value: Some(1000.0),
            m0_tr: Some(5.0),
            m0_te: Some(0.014),
            reference_t1: Some(4.3),
            reference_t2star: Some(0.4),
            reference_partition_coefficient: Some(1.15),
            quantification_model: Some("buxton_multi_pld".into()),
            fitting: AslFittingConfig {
                bounds: BTreeMap::from([("ATT".to_string(), [0.0, 4.0])]),
                ..AslFittingConfig::default()
            },
            ..AslConfig::default()
        }
    }

    fn validate(p: &AslConfig, reg: &Registry) -> Result<()> {
        reg.get::<DifferenceMethod>(&p.difference_method)?;
        reg.get::<M0Calibration>(&p.m0_method)?;
        if let Some(q) = &p.quantification_model {
            reg.get::<Quantification>(q)?;
        }
        if p.pld.is_some() && p.plds.is_some() {
            return Err(OsipyError::Validation(
                "pipeline.pld and pipeline.plds are both set: give one".into(),
            ));
        }
        check_list("pipeline.pld", p.pld.as_slice(), "1.8")?;
        check_list("pipeline.plds", p.plds.as_deref().unwrap_or(&[]), "1.8")?;
        if let Some(l) = &p.label_duration {
            check_list("pipeline.label_duration", &l.values(), "1.8")?;
        }
        for (k, v, e) in [
            ("pipeline.ti1", p.ti1, "0.8"),
            ("pipeline.t1_blood", Some(p.t1_blood), "1.65"),
            ("pipeline.t1_tissue", Some(p.t1_tissue), "1.33"),
            ("pipeline.m0_tr", p.m0_tr, "5.0"),
            ("pipeline.m0_te", p.m0_te, "0.014"),
            ("pipeline.reference_t1", p.reference_t1, "4.3"),
            ("pipeline.reference_t2star", p.reference_t2star, "0.4"),
        ] {
            check_seconds(k, v, MAX_SECONDS, e)?;
        }
        check_positive(
            "pipeline.partition_coefficient (ml/g)",
            p.partition_coefficient,
            "0.9",
        )?;
        if let Some(pc) = p.reference_partition_coefficient {
            check_positive("pipeline.reference_partition_coefficient (ml/g)", pc, "1.15")?;
        }
        if let Some(m) = p.m0_value {
            check_positive("pipeline.m0_value", m, "1000")?;
        }
        for (k, v) in [
            ("pipeline.labeling_efficiency", p.labeling_efficiency),
            (
                "pipeline.background_suppression_efficiency",
                p.background_suppression_efficiency,
            ),
        ] {
            if let Some(v) = v {
                if !(v > 0.0 && v <= 1.0) {
                    return Err(OsipyError::metadata(k, v, "a fraction in (0, 1], e.g. 0.85"));
                }
            }
        }
        LmSettings::from_config(p.fitting.max_iterations, p.fitting.tolerance)?;
        for (name, _, _) in named_bounds(&p.fitting.bounds)? {
            if !param_specs(true).iter().any(|s| s.name == name) {
                return Err(OsipyError::UnknownName {
                    kind: "ASL parameter in pipeline.fitting.bounds".into(),
                    name,
                    valid: param_specs(true).iter().map(|s| s.name.to_string()).collect(),
                });
            }
        }
        bounds(p)?;
        Ok(())
    }

    fn describe(p: &AslConfig) -> String {
        format!(
            "{} scheme, m0_method {}, quantification {}",
            p.labeling_scheme.map_or("sidecar", |s| s.name()),
            p.m0_method,
            p.quantification_model.as_deref().unwrap_or("by PLD count")
        )
    }

    fn run(p: &AslConfig, inputs: &Inputs, ctx: &mut RunContext, reg: &Registry) -> Result<Outputs> {
        let ds = Dataset::load(inputs, &INPUTS[0])?;
        let side = read_sidecar(inputs)?;
        let grid = ds.grid();
        let (n_vox, n_vol) = (ds.n_voxels(), ds.n_volumes());
        let types = volume_kinds(p, inputs, n_vol)?;
        let scheme = scheme(p, &side)?;
        let plds = per_volume(&plds(p, &side)?, &types, "plds")?;
        let taus = per_volume(&taus(p, &side, scheme)?, &types, "label_duration")?;
        for i in (0..n_vol).filter(|i| types[*i].is_asl()) {
            check_seconds("PLD of an ASL volume", Some(plds[i]), MAX_SECONDS, "1.8")?;
            check_seconds(
                "label duration (or TI1) of an ASL volume",
                Some(taus[i]),
                MAX_SECONDS,
                "1.8",
            )?;
        }
        let groups = Groups::new(&types, &plds, &taus);
        if groups.timings.is_empty() {
            return Err(OsipyError::data(
                "volumes of the ASL series",
                "no control, label or deltam volume",
                "label/control pairs or deltam volumes",
            ));
        }
        let mask = ds.flat_mask();
        let series = ds.voxels()?;
        let mut status: Vec<Option<QualityCode>> = (0..n_vox)
            .map(|v| {
                let used = (0..n_vol).filter(|i| types[*i].is_asl() || types[*i] == VolumeType::M0Scan);
                let finite = used.clone().all(|i| series[[v, i]].is_finite());
                (mask[v] && !finite).then_some(QualityCode::NonFiniteInput)
            })
            .collect();
        ctx.lap("read");

        let difference = reg.get::<DifferenceMethod>(&p.difference_method)?.0;
        let dm = difference(&DifferenceInput {
            series,
            types: &types,
            groups: &groups,
        })?;
        let (m0_image, m0_source, m0_tr) = m0_image(p, inputs, &ds, &types, &side, grid)?;
        let (t1r, t2r, pcr) = p.reference_tissue.defaults();
        let m0_settings = M0Settings {
            value: p.m0_value.or(side.m0_estimate),
            tr: m0_tr,
            te: match p.m0_te {
                Some(te) => Some(te),
                None => m0_echo_time(inputs)?,
            },
            t1_tissue: p.t1_tissue,
            lambda: p.partition_coefficient,
            reference: (
                p.reference_t1.unwrap_or(t1r),
                p.reference_t2star.unwrap_or(t2r),
                p.reference_partition_coefficient.unwrap_or(pcr),
            ),
        };
        let reference = inputs.volume("m0_reference_mask", grid)?.map(|r| {
            r.iter()
                .map(|v| *v != 0.0 && v.is_finite())
                .collect::<Vec<bool>>()
        });
        let calibrate = reg.get::<M0Calibration>(&p.m0_method)?.0;
        let m0 = calibrate(&M0Input {
            image: m0_image.as_deref(),
            source: &m0_source,
            mask: &mask,
            reference: reference.as_deref(),
            settings: &m0_settings,
        })?;
        let mut dm_over_m0 = dm.clone();
        for v in 0..n_vox {
            if mask[v] && status[v].is_none() && !(m0[v] > 0.0 && m0[v].is_finite()) {
                status[v] = Some(QualityCode::InvalidSignal);
            }
            dm_over_m0.row_mut(v).mapv_inplace(|x| x / m0[v]);
        }
        ctx.lap("difference_and_m0");

        let bs_pulses = p.background_suppression_pulses.or(side
            .bs_pulses
            .filter(|_| side.background_suppression != Some(false)));
        let alpha = effective_efficiency(
            p.labeling_efficiency
                .or(side.efficiency)
                .unwrap_or(scheme.default_efficiency()),
            bs_pulses,
            p.background_suppression_efficiency,
        );
        let physio = Physio {
            t1_blood: p.t1_blood,
            t1_tissue: p.t1_tissue,
            lambda: p.partition_coefficient,
            alpha,
        };
        let model = match &p.quantification_model {
            Some(m) => m.clone(),
            None if groups.timings.len() == 1 => format!("{}_single_pld", scheme.name()),
            None => "buxton_multi_pld".into(),
        };
        let q = reg.get::<Quantification>(&model)?;
        if q.scheme.is_some_and(|s| s != scheme) {
            return Err(OsipyError::data(
                "pipeline.quantification_model",
                format!("\"{model}\" for a {} series", scheme.name()),
                format!("{}_single_pld or buxton_multi_pld", scheme.name()),
            ));
        }
        if p.arterial_component && !q.multi_pld {
            return Err(OsipyError::Validation(format!(
                "pipeline.arterial_component = true needs a multi-PLD fit; quantification_model is \"{model}\""
            )));
        }
        let fit_mask: Vec<bool> = (0..n_vox).map(|v| mask[v] && status[v].is_none()).collect();
        let mut fit = FitOptions {
            lm: LmSettings::from_config(p.fitting.max_iterations, p.fitting.tolerance)?,
            progress: Some(ctx.progress.counter()),
            ..FitOptions::default()
        };
        if !p.fitting.bounds.is_empty() {
            fit.bounds = Some(bounds(p)?);
        }
        ctx.progress.start(n_vox);
        let out = (q.run)(
            &QuantInput {
                dm_over_m0: dm_over_m0.view(),
                mask: &fit_mask,
                timings: &groups.timings,
                scheme,
                physio,
                arterial: p.arterial_component,
                fit: &fit,
            },
            &ctx.device,
        )?;
        ctx.lap("fit");

        let quality: Vec<QualityCode> = (0..n_vox).map(|v| status[v].unwrap_or(out.status[v])).collect();
        let quality = to_grid(grid, quality)?;
        let provenance = Provenance::default()
            .with_method("quantification", &model)
            .with_method("difference", &p.difference_method)
            .with_method("m0", &p.m0_method)
            .with_method("labeling_scheme", scheme.name())
            .with_setting("labeling_efficiency_effective", alpha)
            .with_setting("t1_blood_s", p.t1_blood)
            .with_setting("t1_tissue_s", p.t1_tissue)
            .with_setting("partition_coefficient", p.partition_coefficient)
            .with_setting(
                "plds_s",
                groups.timings.iter().map(|t| t.pld).collect::<Vec<f64>>(),
            )
            .with_setting(
                "label_durations_s",
                groups.timings.iter().map(|t| t.tau).collect::<Vec<f64>>(),
            );
        let mut maps = Vec::new();
        for m in out.maps {
            maps.push(ParameterMap::new(
                m.name,
                m.name,
                m.unit,
                to_grid(grid, m.values)?,
                quality.clone(),
                m.std_errors.map(|se| to_grid(grid, se)).transpose()?,
                provenance.clone(),
            )?);
        }
        let r_squared = to_grid(grid, out.r_squared.unwrap_or_else(|| vec![f64::NAN; n_vox]))?;
        let mut plots = Vec::new();
        if q.multi_pld {
            let model = BuxtonModel::new(scheme, groups.timings.clone(), physio, p.arterial_component)?;
            let params: Option<Vec<&Array3<f64>>> = model
                .params()
                .iter()
                .map(|s| maps.iter().find(|m| m.name == s.name).map(|m| &m.values))
                .collect();
            if let Some(params) = params {
                let x: Vec<f64> = groups.timings.iter().map(|t| t.pld).collect();
                let axes = CurveAxes {
                    quantity: "ΔM/M0",
                    x_label: if scheme == LabelingScheme::Pasl {
                        "inversion time TI (s)"
                    } else {
                        "post-labeling delay (s)"
                    },
                    y_label: "ΔM / M0",
                    x: &x,
                    rank: ("R²", r_squared.view()),
                };
                plots = voxel_curves(&mask, &ctx.report_voxels, axes, |v| {
                    let i = voxel_xyz(v, grid);
                    let theta: Vec<f64> = params.iter().map(|m| m[(i[0], i[1], i[2])]).collect();
                    let mut fitted = vec![f64::NAN; x.len()];
                    if theta.iter().all(|t| t.is_finite()) {
                        model.predict(&theta, &mut fitted);
                    }
                    Some((dm_over_m0.row(v).to_vec(), fitted))
                })?;
            }
        }
        let n_groups = groups.timings.len();
        let dm4 = Array4::from_shape_vec(
            (grid[0], grid[1], grid[2], n_groups),
            dm.into_raw_vec_and_offset().0,
        )
        .map_err(|e| OsipyError::data("deltaM", e.to_string(), "the grid"))?;
        let volumes = vec![
            ("deltaM.nii.gz".to_string(), Volume::Series(dm4, 1.0)),
            ("M0.nii.gz".to_string(), Volume::Map(to_grid(grid, m0)?)),
        ];
        Ok(Outputs {
            maps: MapSet {
                maps,
                r_squared,
                quality,
            },
            volumes,
            shape: [grid[0], grid[1], grid[2], n_vol],
            mask,
            inputs: ds.files.clone(),
            geometry: ds.geometry,
            plots,
        })
    }

    fn demo() -> Result<DemoCase> {
        let spec = AslPhantomSpec {
            shape: [16, 16, 2],
            repeats: 2,
            m0_tr: Some(4.0),
            snr: Some(2000.0),
            seed: 2026,
            ..AslPhantomSpec::default()
        };
        let ph = generate(&spec)?;
        let context: String = std::iter::once("volume_type".to_string())
            .chain(
                (0..ph.volume_plds.len()).map(|i| if i % 2 == 0 { "control" } else { "label" }.to_string()),
            )
            .map(|l| l + "\n")
            .collect();
        let m0 = ph.m0.clone().insert_axis(Axis(3));
        let plds: Vec<String> = ph.volume_plds.iter().map(|p| p.to_string()).collect();
        Ok(DemoCase {
            title: format!(
                "ASL demo: pCASL phantom {}x{}x{} voxels, {} PLDs x {} pairs (label 1.8 s), M0 at TR 4 s, noise SD M0/2000",
                spec.shape[0],
                spec.shape[1],
                spec.shape[2],
                spec.plds.len(),
                spec.repeats
            ),
            about: "CBF 20-80 ml/100g/min along x, ATT 0.6-1.8 s along y; buxton_multi_pld fit".into(),
            files: vec![
                ("asl.nii.gz".into(), DemoFile::Series(ph.series.clone(), 1.0)),
                ("m0.nii.gz".into(), DemoFile::Series(m0.to_owned(), 1.0)),
                ("aslcontext.tsv".into(), DemoFile::Text(context)),
            ],
            config: format!(
                "# Written by `osipy demo asl`.\nmodality = \"asl\"\n\n[pipeline]\nlabeling_scheme = \"pcasl\"\nplds = [{}]\nlabel_duration = 1.8\nm0_tr = 4.0\n\n[data]\nasl = \"asl.nii.gz\"\nm0 = \"m0.nii.gz\"\naslcontext = \"aslcontext.tsv\"\n",
                plds.join(", ")
            ),
            truth: vec![("CBF".into(), ph.cbf.clone(), 1), ("ATT".into(), ph.att.clone(), 2)],
        })
    }

    fn phantom_checks(reg: &Registry) -> Result<Vec<DroRow>> {
        crate::validation::phantom_rows(reg)
    }

    fn choices() -> Vec<(&'static str, Vec<String>)> {
        vec![
            ("labeling_scheme", choice_names::<LabelingScheme>()),
            ("label_control_order", choice_names::<LabelControlOrder>()),
            ("reference_tissue", choice_names::<ReferenceTissue>()),
        ]
    }
}

/// Bounds of the multi-PLD parameters: defaults with the configured ones
/// in place; a bound on an arterial parameter without the arterial
/// component is an error.
fn bounds(p: &AslConfig) -> Result<Vec<(f64, f64)>> {
    let specs = param_specs(p.arterial_component);
    let mut b: Vec<(f64, f64)> = specs.iter().map(|s| s.bounds).collect();
    for (name, lo, hi) in named_bounds(&p.fitting.bounds)? {
        let j = specs.iter().position(|s| s.name == name).ok_or_else(|| {
            OsipyError::Validation(format!(
                "pipeline.fitting.bounds.{name} is set but {name} is fitted only with arterial_component = true"
            ))
        })?;
        b[j] = (lo, hi);
    }
    Ok(b)
}

fn to_grid<T: Clone>(grid: [usize; 3], v: Vec<T>) -> Result<Array3<T>> {
    Array3::from_shape_vec(grid, v).map_err(|e| OsipyError::data("map", e.to_string(), "the grid"))
}

/// Volume types from `data.aslcontext` (its length must be the series'),
/// else from `label_control_order`; `dummy_volumes` leading ones dropped.
fn volume_kinds(p: &AslConfig, inputs: &Inputs, n_vol: usize) -> Result<Vec<VolumeType>> {
    let Some(text) = inputs.text("aslcontext")? else {
        return volume_types(p.label_control_order, n_vol, p.dummy_volumes);
    };
    let source = inputs
        .path("aslcontext")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut types = parse_aslcontext(&text, &format!("data.aslcontext {source}"))?;
    if types.len() != n_vol {
        return Err(OsipyError::data(
            format!("volumes listed in data.aslcontext {source}"),
            types.len().to_string(),
            format!("{n_vol}, the volumes of the ASL series"),
        ));
    }
    if p.dummy_volumes >= n_vol {
        return Err(OsipyError::data(
            "pipeline.dummy_volumes",
            p.dummy_volumes.to_string(),
            format!("fewer than the {n_vol} volumes of the series"),
        ));
    }
    types[..p.dummy_volumes].fill(VolumeType::Dummy);
    Ok(types)
}

fn scheme(p: &AslConfig, side: &Sidecar) -> Result<LabelingScheme> {
    if let Some(s) = p.labeling_scheme {
        return Ok(s);
    }
    match side.scheme.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("pcasl") => Ok(LabelingScheme::Pcasl),
        Some("casl") => Ok(LabelingScheme::Casl),
        Some("pasl") => Ok(LabelingScheme::Pasl),
        Some(other) => Err(OsipyError::data(
            format!("ArterialSpinLabelingType in {}", side.path),
            format!("\"{other}\""),
            "PCASL, CASL or PASL (or set pipeline.labeling_scheme)",
        )),
        None => Err(OsipyError::MissingParameter {
            name: "pipeline.labeling_scheme".into(),
            needed_for: "ASL quantification".into(),
            hint: "pcasl, casl or pasl (or ArterialSpinLabelingType in the series' JSON sidecar)".into(),
        }),
    }
}

fn plds(p: &AslConfig, side: &Sidecar) -> Result<Vec<f64>> {
    if let Some(v) = p.pld {
        return Ok(vec![v]);
    }
    if let Some(v) = &p.plds {
        return Ok(v.clone());
    }
    match &side.plds {
        Some(v) => {
            check_list(&format!("{} (PostLabelingDelay)", side.path), v, "1.8").or_else(|e| {
                // BIDS gives m0scan volumes a PLD of 0: only ASL volumes are checked later.
                if v.iter().all(|x| *x >= 0.0 && *x < MAX_SECONDS) {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            Ok(v.clone())
        }
        None => Err(OsipyError::MissingParameter {
            name: "pipeline.pld".into(),
            needed_for: "ASL quantification".into(),
            hint: "post-labeling delay in s, e.g. pld = 1.8, or plds = [...] (or PostLabelingDelay in the sidecar)"
                .into(),
        }),
    }
}

fn taus(p: &AslConfig, side: &Sidecar, scheme: LabelingScheme) -> Result<Vec<f64>> {
    if scheme.is_continuous() {
        if let Some(l) = &p.label_duration {
            return Ok(l.values());
        }
        side.label_duration
            .clone()
            .ok_or_else(|| OsipyError::MissingParameter {
                name: "pipeline.label_duration".into(),
                needed_for: format!("{} quantification", scheme.name()),
                hint: "label duration in s, e.g. label_duration = 1.8 (or LabelingDuration in the sidecar)"
                    .into(),
            })
    } else {
        if let Some(t) = p.ti1 {
            return Ok(vec![t]);
        }
        // Q2TIPS gives [start, end] of the saturation train: TI1 is the start.
        side.bolus_cutoff
            .as_ref()
            .and_then(|v| v.first())
            .map(|t| vec![*t])
            .ok_or_else(|| OsipyError::MissingParameter {
                name: "pipeline.ti1".into(),
                needed_for: "PASL quantification (the bolus duration)".into(),
                hint:
                    "TI1 of QUIPSS II / Q2TIPS in s, e.g. ti1 = 0.8 (or BolusCutOffDelayTime in the sidecar)"
                        .into(),
            })
    }
}

/// M0 signal image, where it came from, and its TR: `data.m0` (mean over
/// its volumes), else the series' m0scan volumes, else (no background
/// suppression only) the mean control image.
#[allow(clippy::type_complexity)]
fn m0_image(
    p: &AslConfig,
    inputs: &Inputs,
    ds: &Dataset,
    types: &[VolumeType],
    side: &Sidecar,
    grid: [usize; 3],
) -> Result<(Option<Vec<f64>>, String, Option<f64>)> {
    let series = ds.voxels()?;
    let mean_of = |kind: VolumeType| -> Option<Vec<f64>> {
        let idx: Vec<usize> = (0..types.len()).filter(|i| types[*i] == kind).collect();
        (!idx.is_empty()).then(|| {
            (0..series.nrows())
                .map(|v| idx.iter().map(|i| series[[v, *i]]).sum::<f64>() / idx.len() as f64)
                .collect()
        })
    };
    let sidecar_tr = || -> Result<Option<f64>> {
        Ok(inputs.sidecar("m0")?.and_then(|(_, j)| {
            j.get("RepetitionTimePreparation")
                .or_else(|| j.get("RepetitionTime"))
                .and_then(|v| v.as_f64())
        }))
    };
    if let Some(path) = inputs.path("m0") {
        let source = format!("data.m0 {}", path.display());
        let img = match inputs.volume("m0", grid) {
            Ok(v) => v.map(|v| v.iter().copied().collect::<Vec<f64>>()),
            Err(e3) => match inputs.series("m0") {
                Ok(Some(s)) => {
                    osipy_io::check_grid("m0", path, s.data.shape(), grid)?;
                    let mean: Array3<f64> = s
                        .data
                        .mean_axis(Axis(3))
                        .ok_or_else(|| OsipyError::data(&source, "no volume", "an M0 image"))?;
                    Some(mean.iter().copied().collect())
                }
                _ => return Err(e3),
            },
        };
        let tr = match p.m0_tr {
            Some(tr) => Some(tr),
            None => sidecar_tr()?,
        };
        return Ok((img, source, tr));
    }
    let tr = p
        .m0_tr
        .or(ds.acquisition.repetition_time.as_ref().map(|s| s.value));
    if let Some(img) = mean_of(VolumeType::M0Scan) {
        return Ok((Some(img), "the m0scan volumes of data.asl".into(), tr));
    }
    let suppressed = p.background_suppression_pulses.is_some_and(|n| n > 0)
        || side.background_suppression == Some(true)
        || p.background_suppression_efficiency.is_some();
    let single_value = p.m0_value.is_some() || side.m0_estimate.is_some();
    if single_value || p.m0_method == "single" && !suppressed {
        return Ok((mean_of(VolumeType::Control), "the mean control image".into(), tr));
    }
    if suppressed {
        return Err(OsipyError::MissingParameter {
            name: "data.m0".into(),
            needed_for: "CBF with background suppression (the control images are suppressed and cannot serve as M0)"
                .into(),
            hint: "an M0 image (data.m0, or m0scan volumes in data.aslcontext), or m0_method = \"single\" with m0_value"
                .into(),
        });
    }
    if side.m0_type.as_deref() == Some("Absent") || mean_of(VolumeType::Control).is_none() {
        return Err(OsipyError::MissingParameter {
            name: "data.m0".into(),
            needed_for: "CBF quantification".into(),
            hint: "an M0 image (data.m0, or m0scan volumes in data.aslcontext), or m0_method = \"single\" with m0_value"
                .into(),
        });
    }
    tracing::warn!("no M0 image: using the mean control image (no background suppression) as M0");
    Ok((mean_of(VolumeType::Control), "the mean control image".into(), tr))
}

fn m0_echo_time(inputs: &Inputs) -> Result<Option<f64>> {
    Ok(inputs
        .sidecar("m0")?
        .and_then(|(_, j)| j.get("EchoTime").and_then(|v| v.as_f64())))
}

/// ΔM / M0 of a grid of voxels as rows (used by validation).
pub(crate) fn rows(a: &Array4<f64>) -> Result<Array2<f64>> {
    let s = a.shape();
    a.to_shape((s[0] * s[1] * s[2], s[3]))
        .map(|v| v.to_owned())
        .map_err(|e| OsipyError::data("series", e.to_string(), "a 4D array"))
}
