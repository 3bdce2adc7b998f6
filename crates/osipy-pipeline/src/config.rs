//! The TOML configuration of a run.
//!
//! The tree mirrors Python osipy's YAML (`modality`, `pipeline`, `data`,
//! `output`, `backend`, `logging`) so a config translates line by line, with
//! these differences: values are SI as in BIDS (seconds, degrees; Python uses
//! ms for `tr` and `t1_assumed`), and a value that looks like milliseconds is
//! rejected with a hint; unknown or misspelled keys are errors that suggest the
//! nearest valid key (Python silently accepts them).

use osipy_core::{Modality, OsipyError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A whole run configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Which modality the pipeline analyses.
    pub modality: Modality,
    /// Modality-specific pipeline settings (`[pipeline]`).
    pub pipeline: PipelineConfig,
    /// Input files.
    #[serde(default)]
    pub data: DataConfig,
    /// Outputs.
    #[serde(default)]
    pub output: OutputConfig,
    /// Compute backend.
    #[serde(default)]
    pub backend: BackendConfig,
    /// Logging.
    #[serde(default)]
    pub logging: LoggingConfig,
}

/// The `[pipeline]` table, typed by the modality.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
// One config per run: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum PipelineConfig {
    /// DCE-MRI.
    Dce(DcePipelineConfig),
    /// IVIM.
    Ivim(IvimPipelineConfig),
}

/// The file as written: `[pipeline]` stays raw until the modality is known.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    modality: Modality,
    #[serde(default)]
    pipeline: Option<toml::Value>,
    #[serde(default)]
    data: DataConfig,
    #[serde(default)]
    output: OutputConfig,
    #[serde(default)]
    backend: BackendConfig,
    #[serde(default)]
    logging: LoggingConfig,
}

/// IVIM pipeline settings (`[pipeline]` with `modality = "ivim"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IvimPipelineConfig {
    /// Fitting strategy: segmented | full.
    pub fitting_method: String,
    /// b-value (s/mm^2) at and above which perfusion is taken as decayed.
    pub b_threshold: f64,
    /// Normalise each voxel to its mean b = 0 signal.
    pub normalize_signal: bool,
    /// Segmented step 2 fits S0 and f with D* (D held); false takes f from
    /// the step-1 intercept and S0 from the b = 0 signal.
    pub segmented_fit_f: bool,
    /// Model fitting.
    pub fitting: IvimFittingConfig,
}

impl Default for IvimPipelineConfig {
    fn default() -> Self {
        IvimPipelineConfig {
            fitting_method: "segmented".into(),
            b_threshold: 200.0,
            normalize_signal: true,
            segmented_fit_f: true,
            fitting: IvimFittingConfig::default(),
        }
    }
}

/// IVIM fitting (`[pipeline.fitting]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IvimFittingConfig {
    /// Maximum LM iterations per voxel and step.
    pub max_iterations: usize,
    /// Relative convergence tolerance (cost change and step).
    pub tolerance: f64,
    /// Per-parameter bounds `{ name = [lower, upper] }` for S0, f, D, Dstar.
    pub bounds: BTreeMap<String, [f64; 2]>,
    /// Starting values of the `full` fit, `{ name = value }`.
    pub initial_guess: BTreeMap<String, f64>,
    /// Sampler settings of `fitting_method = "bayesian"`.
    pub bayesian: BayesianConfig,
}

/// Bayesian IVIM sampler (`[pipeline.fitting.bayesian]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BayesianConfig {
    /// Warm-up iterations per voxel (discarded).
    pub tune: u64,
    /// Posterior draws per voxel.
    pub draws: u64,
    /// Random seed (results are reproducible for a given seed).
    pub seed: u64,
}

impl Default for BayesianConfig {
    fn default() -> Self {
        BayesianConfig {
            tune: 300,
            draws: 500,
            seed: 42,
        }
    }
}

impl Default for IvimFittingConfig {
    fn default() -> Self {
        IvimFittingConfig {
            max_iterations: 500,
            tolerance: 1e-6,
            bounds: BTreeMap::new(),
            initial_guess: BTreeMap::new(),
            bayesian: BayesianConfig::default(),
        }
    }
}

/// DCE pipeline settings (`[pipeline]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DcePipelineConfig {
    /// PK model: tofts | extended_tofts | patlak | 2cxm | 2cum.
    pub model: String,
    /// T1 mapping method: vfa | look_locker.
    pub t1_mapping_method: String,
    /// Signal-to-concentration model: spgr | linear | none (data already in mM).
    pub concentration: String,
    /// AIF source: population | detect | manual.
    pub aif_source: String,
    /// Population AIF: parker | georgiou | fritz_hansen | weinmann | mcgrath.
    pub population_aif: String,
    /// Bolus arrival of a population AIF (s); default: the first frame after
    /// the baseline.
    pub aif_delay: Option<f64>,
    /// Hematocrit for blood-to-plasma conversion of blood AIFs (fraction).
    pub hematocrit: f64,
    /// Also write T1, R1 and concentration.
    pub save_intermediate: bool,
    /// Acquisition parameters.
    pub acquisition: DceAcquisitionConfig,
    /// Model fitting.
    pub fitting: DceFittingConfig,
}

impl Default for DcePipelineConfig {
    fn default() -> Self {
        DcePipelineConfig {
            model: "extended_tofts".into(),
            t1_mapping_method: "vfa".into(),
            concentration: "spgr".into(),
            aif_source: "population".into(),
            population_aif: "parker".into(),
            aif_delay: None,
            hematocrit: 0.42,
            save_intermediate: false,
            acquisition: DceAcquisitionConfig::default(),
            fitting: DceFittingConfig::default(),
        }
    }
}

/// DCE acquisition (`[pipeline.acquisition]`), SI units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DceAcquisitionConfig {
    /// Number of pre-contrast frames.
    pub baseline_frames: usize,
    /// Relaxivity r1 (1/s/mM).
    pub relaxivity: f64,
    /// Repetition time (s) of the dynamic and VFA series.
    pub tr: Option<f64>,
    /// Flip angle of the dynamic series (degrees).
    pub flip_angle: Option<f64>,
    /// Flip angles of the VFA series (degrees), one per volume.
    pub flip_angles: Option<Vec<f64>>,
    /// Pre-contrast T1 (s) used when no T1 map or VFA series is given.
    pub t1_assumed: Option<f64>,
    /// Inversion times (s) of a Look-Locker series, one per volume.
    pub inversion_times: Option<Vec<f64>>,
}

impl Default for DceAcquisitionConfig {
    fn default() -> Self {
        DceAcquisitionConfig {
            baseline_frames: 5,
            relaxivity: 4.5,
            tr: None,
            flip_angle: None,
            flip_angles: None,
            t1_assumed: None,
            inversion_times: None,
        }
    }
}

/// DCE fitting (`[pipeline.fitting]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DceFittingConfig {
    /// Fitter: lm.
    pub fitter: String,
    /// Maximum LM iterations per voxel.
    pub max_iterations: usize,
    /// Relative convergence tolerance (cost change and step).
    pub tolerance: f64,
    /// Voxels with R^2 below this are invalid (NaN, flagged `low_r2`).
    pub r2_threshold: f64,
    /// Fit an arterial delay (s) per voxel.
    pub fit_delay: bool,
    /// Per-parameter bounds, `{ name = [lower, upper] }`.
    pub bounds: BTreeMap<String, [f64; 2]>,
    /// Per-parameter starting values, `{ name = value }`.
    pub initial_guess: BTreeMap<String, f64>,
}

impl Default for DceFittingConfig {
    fn default() -> Self {
        DceFittingConfig {
            fitter: "lm".into(),
            max_iterations: 100,
            tolerance: 1e-6,
            r2_threshold: 0.5,
            fit_delay: false,
            bounds: BTreeMap::new(),
            initial_guess: BTreeMap::new(),
        }
    }
}

/// Input files (`[data]`), relative to DATA_PATH or absolute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// 4D dynamic series (NIfTI).
    pub dynamic: Option<String>,
    /// 4D VFA series, one volume per flip angle (NIfTI).
    pub vfa: Option<String>,
    /// 4D Look-Locker series, one volume per inversion time (NIfTI).
    pub look_locker: Option<String>,
    /// Pre-contrast T1 map in seconds (NIfTI).
    pub t1_map: Option<String>,
    /// Analysis mask (NIfTI; non-zero = analysed).
    pub mask: Option<String>,
    /// AIF as text: columns time (s) and plasma concentration (mM).
    pub aif_file: Option<String>,
    /// Frame times in seconds, one per line (else from the NIfTI pixdim).
    pub time_file: Option<String>,
    /// 4D diffusion-weighted series (IVIM).
    pub dwi: Option<String>,
    /// b-values (s/mm^2), one per DWI volume.
    pub b_values: Option<Vec<f64>>,
    /// b-values file: FSL `.bval` (one line) or one value per line.
    pub b_values_file: Option<String>,
}

/// Outputs (`[output]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Output format: nifti.
    pub format: String,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            format: "nifti".into(),
        }
    }
}

/// Compute backend (`[backend]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Device: cpu.
    pub device: String,
    /// Worker threads; 0 = `OSIPY_NUM_THREADS` or all cores.
    pub threads: usize,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            device: "cpu".into(),
            threads: 0,
        }
    }
}

/// Logging (`[logging]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Level: error | warn | info | debug | trace.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { level: "info".into() }
    }
}

/// Modalities with a pipeline in this build.
pub const AVAILABLE_MODALITIES: [Modality; 2] = [Modality::Dce, Modality::Ivim];

/// The commented default configuration of `modality` (every key, its unit).
pub fn dump_defaults(modality: Modality) -> Result<&'static str> {
    match modality {
        Modality::Dce => Ok(DCE_DEFAULTS),
        Modality::Ivim => Ok(IVIM_DEFAULTS),
        other => Err(unavailable(other)),
    }
}

fn unavailable(m: Modality) -> OsipyError {
    OsipyError::UnknownName {
        kind: "modality with a pipeline in this build".into(),
        name: m.as_str().into(),
        valid: AVAILABLE_MODALITIES
            .iter()
            .map(|m| m.as_str().to_string())
            .collect(),
    }
}

const DCE_DEFAULTS: &str = r#"# osipy configuration: DCE-MRI. Values are SI units as in BIDS (seconds, degrees).
modality = "dce"

[pipeline]
model = "extended_tofts"          # tofts | extended_tofts | patlak | 2cxm | 2cum
t1_mapping_method = "vfa"         # vfa (data.vfa + flip_angles) | look_locker (data.look_locker + inversion_times)
concentration = "spgr"            # spgr | linear | none (dynamic data already in mM)
aif_source = "population"         # population | detect | manual (needs data.aif_file)
population_aif = "parker"         # parker | georgiou | fritz_hansen | weinmann | mcgrath
# aif_delay = 17.5                # s, bolus arrival of a population AIF (default: first frame after the baseline)
hematocrit = 0.42                 # fraction, converts blood AIFs to plasma
save_intermediate = false         # also write T1, R1 and concentration

[pipeline.acquisition]
baseline_frames = 5               # frames before contrast arrival
relaxivity = 4.5                  # r1, 1/s/mM
# tr = 0.005                      # s, repetition time (dynamic and VFA)
# flip_angle = 15.0               # degrees, dynamic series
# flip_angles = [2.0, 5.0, 10.0, 15.0]  # degrees, one per VFA volume
# t1_assumed = 1.4                # s, pre-contrast T1 when there is no T1 map, VFA or Look-Locker series
# inversion_times = [0.1, 0.3, 0.5]  # s, one per Look-Locker volume

[pipeline.fitting]
fitter = "lm"                     # lm
max_iterations = 100              # per voxel
tolerance = 1e-6                  # relative change of cost and step
r2_threshold = 0.5                # voxels below are invalid (NaN, quality code low_r2)
fit_delay = false                 # fit an arterial delay per voxel (s, bounds [-10, 10])
bounds = {}                       # e.g. { vp = [0.0, 0.2] }; units as the maps (Ktrans 1/min)
initial_guess = {}                # e.g. { ve = 0.2 }; others from the data

[data]                            # relative to DATA_PATH or absolute; see docs for auto-discovery
# dynamic = "dce.nii.gz"          # 4D series
# vfa = "vfa.nii.gz"              # 4D, one volume per flip angle
# look_locker = "ll.nii.gz"       # 4D, one volume per inversion time
# t1_map = "t1.nii.gz"            # s
# mask = "mask.nii.gz"            # non-zero = analysed
# aif_file = "aif.csv"            # columns: time (s), plasma concentration (mM)
# time_file = "times.txt"         # frame times (s), else from the NIfTI header

[output]
format = "nifti"                  # nifti (.nii.gz + JSON sidecars)

[backend]
device = "cpu"                    # cpu
threads = 0                       # 0 = OSIPY_NUM_THREADS or all cores

[logging]
level = "info"                    # error | warn | info | debug | trace
"#;

const IVIM_DEFAULTS: &str = r#"# osipy configuration: IVIM. b-values in s/mm^2, diffusivities in mm^2/s.
modality = "ivim"

[pipeline]
fitting_method = "segmented"      # segmented | full | bayesian
b_threshold = 200.0               # s/mm^2, perfusion taken as decayed at and above
normalize_signal = true           # divide each voxel by its mean b = 0 signal
segmented_fit_f = true            # segmented step 2 fits S0, f, D* (false: f from step-1 intercept)

[pipeline.fitting]
max_iterations = 500              # per voxel and step
tolerance = 1e-6                  # relative change of cost and step
bounds = {}                       # e.g. { Dstar = [0.005, 0.2] }; S0, f, D, Dstar
initial_guess = {}                # full fit start, e.g. { Dstar = 0.02 }; others from segmented

[pipeline.fitting.bayesian]       # fitting_method = "bayesian": NUTS per voxel
tune = 300                        # warm-up iterations per voxel
draws = 500                       # posterior draws per voxel
seed = 42                         # same seed, same maps


[data]                            # relative to DATA_PATH or absolute; see docs for auto-discovery
# dwi = "dwi.nii.gz"              # 4D, one volume per b-value
# b_values = [0, 10, 20, 50, 100, 200, 400, 800]  # s/mm^2
# b_values_file = "dwi.bval"      # FSL .bval or one value per line
# mask = "mask.nii.gz"            # non-zero = analysed

[output]
format = "nifti"                  # nifti (.nii.gz + JSON sidecars)

[backend]
device = "cpu"                    # cpu
threads = 0                       # 0 = OSIPY_NUM_THREADS or all cores

[logging]
level = "info"                    # error | warn | info | debug | trace
"#;

/// Levenshtein distance, for key suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The valid key tree of `modality`: the defaults with every optional key
/// filled in.
fn schema(modality: Modality) -> toml::Value {
    let mut dce = DcePipelineConfig {
        aif_delay: Some(0.0),
        ..Default::default()
    };
    let a = &mut dce.acquisition;
    a.tr = Some(0.0);
    a.flip_angle = Some(0.0);
    a.flip_angles = Some(vec![]);
    a.t1_assumed = Some(0.0);
    a.inversion_times = Some(vec![]);
    let c = Config {
        modality,
        pipeline: match modality {
            Modality::Ivim => PipelineConfig::Ivim(IvimPipelineConfig::default()),
            _ => PipelineConfig::Dce(dce),
        },
        data: DataConfig {
            dynamic: Some(String::new()),
            vfa: Some(String::new()),
            look_locker: Some(String::new()),
            t1_map: Some(String::new()),
            mask: Some(String::new()),
            aif_file: Some(String::new()),
            time_file: Some(String::new()),
            dwi: Some(String::new()),
            b_values: Some(vec![]),
            b_values_file: Some(String::new()),
        },
        output: OutputConfig::default(),
        backend: BackendConfig::default(),
        logging: LoggingConfig::default(),
    };
    toml::Value::try_from(&c).expect("the config serialises to TOML")
}

/// Tables whose keys are parameter names (checked later against the model).
const FREE_TABLES: [&str; 2] = ["pipeline.fitting.bounds", "pipeline.fitting.initial_guess"];

fn check_keys(value: &toml::Value, schema: &toml::Value, path: &str) -> Result<()> {
    let (Some(table), Some(valid)) = (value.as_table(), schema.as_table()) else {
        return Ok(());
    };
    for (key, v) in table {
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match valid.get(key) {
            Some(s) if !FREE_TABLES.contains(&full.as_str()) => check_keys(v, s, &full)?,
            Some(_) => {}
            None => {
                let best = valid.keys().min_by_key(|k| edit_distance(key, k));
                let hint = match best {
                    Some(b) if edit_distance(key, b) <= (key.len() / 3).max(2) => {
                        format!("did you mean `{}`?", join(path, b))
                    }
                    _ => format!(
                        "valid keys here: {}",
                        valid.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                };
                return Err(OsipyError::Validation(format!(
                    "unknown config key `{full}`; {hint}"
                )));
            }
        }
    }
    Ok(())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Config {
    /// Parses TOML text: unknown keys (with a suggestion), wrong types and
    /// invalid values are errors; see [`Config::validate`].
    pub fn from_toml(text: &str) -> Result<Config> {
        let value: toml::Value = toml::from_str(text)
            .map_err(|e| OsipyError::Validation(format!("config is not valid TOML: {e}")))?;
        let mut modality = Modality::Dce;
        if let Some(m) = value.get("modality").and_then(|m| m.as_str()) {
            modality = m.parse()?;
            if !AVAILABLE_MODALITIES.contains(&modality) {
                return Err(unavailable(modality));
            }
        }
        check_keys(&value, &schema(modality), "")?;
        let raw: RawConfig = value
            .try_into()
            .map_err(|e: toml::de::Error| OsipyError::Validation(format!("config: {}", e.message())))?;
        let table = raw
            .pipeline
            .unwrap_or_else(|| toml::Value::Table(Default::default()));
        let bad = |e: toml::de::Error| OsipyError::Validation(format!("config: [pipeline]: {}", e.message()));
        let pipeline = match raw.modality {
            Modality::Ivim => PipelineConfig::Ivim(table.try_into().map_err(bad)?),
            _ => PipelineConfig::Dce(table.try_into().map_err(bad)?),
        };
        let config = Config {
            modality: raw.modality,
            pipeline,
            data: raw.data,
            output: raw.output,
            backend: raw.backend,
            logging: raw.logging,
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &std::path::Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| OsipyError::Io {
            path: path.into(),
            message: "cannot read the config file".into(),
            source: Some(e),
        })?;
        Config::from_toml(&text).map_err(|e| match e {
            OsipyError::Validation(m) => OsipyError::Validation(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The DCE settings, or an error naming the configured modality.
    pub fn dce(&self) -> Result<&DcePipelineConfig> {
        match &self.pipeline {
            PipelineConfig::Dce(p) => Ok(p),
            _ => Err(OsipyError::Validation(format!(
                "this is a {} configuration, not a DCE one",
                self.modality
            ))),
        }
    }

    /// The IVIM settings, or an error naming the configured modality.
    pub fn ivim(&self) -> Result<&IvimPipelineConfig> {
        match &self.pipeline {
            PipelineConfig::Ivim(p) => Ok(p),
            _ => Err(OsipyError::Validation(format!(
                "this is a {} configuration, not an IVIM one",
                self.modality
            ))),
        }
    }

    /// Checks names against the registries and values against their units.
    pub fn validate(&self) -> Result<()> {
        one_of("output.format", &self.output.format, &["nifti"])?;
        one_of("backend.device", &self.backend.device, &["cpu"])?;
        one_of(
            "logging.level",
            &self.logging.level,
            &["debug", "error", "info", "trace", "warn"],
        )?;
        let reg = crate::builtin_registry()?;
        use osipy_core::Kind;
        if let PipelineConfig::Ivim(p) = &self.pipeline {
            reg.get(Kind::IvimFitter, &p.fitting_method)?;
            if !(p.b_threshold > 0.0 && p.b_threshold.is_finite()) {
                return Err(meta(
                    "pipeline.b_threshold (s/mm^2)",
                    &p.b_threshold,
                    "a positive value, e.g. 200",
                ));
            }
            if p.fitting.max_iterations == 0 || !(p.fitting.tolerance > 0.0 && p.fitting.tolerance < 1.0) {
                let found = format!(
                    "max_iterations {}, tolerance {}",
                    p.fitting.max_iterations, p.fitting.tolerance
                );
                return Err(meta(
                    "pipeline.fitting",
                    &found,
                    "max_iterations >= 1 and a tolerance in (0, 1)",
                ));
            }
            for name in p.fitting.bounds.keys().chain(p.fitting.initial_guess.keys()) {
                one_of(
                    "IVIM parameter in pipeline.fitting",
                    name,
                    &["D", "Dstar", "S0", "f"],
                )?;
            }
            for (name, [lo, hi]) in &p.fitting.bounds {
                if !(lo <= hi) {
                    let found = format!("[{lo}, {hi}]");
                    return Err(meta(
                        &format!("pipeline.fitting.bounds.{name}"),
                        &found,
                        "[lower, upper] with lower <= upper",
                    ));
                }
            }
            if let Some(b) = self
                .data
                .b_values
                .iter()
                .flatten()
                .find(|b| !(**b >= 0.0 && b.is_finite()))
            {
                return Err(meta("data.b_values (s/mm^2)", b, "finite, non-negative b-values"));
            }
            return Ok(());
        }
        let p = self.dce()?;
        reg.get(Kind::DceModel, &p.model)?;
        reg.get(Kind::T1Method, &p.t1_mapping_method)?;
        if p.concentration != "none" {
            reg.get(Kind::ConcentrationModel, &p.concentration)
                .map_err(|_| OsipyError::UnknownName {
                    kind: "concentration model".into(),
                    name: p.concentration.clone(),
                    valid: vec!["linear".into(), "none".into(), "spgr".into()],
                })?;
        }
        reg.get(Kind::PopulationAif, &p.population_aif)?;
        reg.get(Kind::Fitter, &p.fitting.fitter)?;
        one_of(
            "pipeline.aif_source",
            &p.aif_source,
            &["detect", "manual", "population"],
        )?;
        let a = &p.acquisition;
        seconds("pipeline.acquisition.tr", a.tr, 1.0, "0.005")?;
        seconds("pipeline.acquisition.t1_assumed", a.t1_assumed, 20.0, "1.4")?;
        seconds("pipeline.aif_delay", p.aif_delay.map(f64::abs), 600.0, "17.5")?;
        for fa in a.flip_angle.iter().chain(a.flip_angles.iter().flatten()) {
            if !(*fa > 0.0 && *fa < 180.0) {
                return Err(meta("flip angle (degrees)", fa, "a value in (0, 180) degrees"));
            }
        }
        if !(a.relaxivity > 0.0 && a.relaxivity.is_finite()) {
            return Err(meta(
                "pipeline.acquisition.relaxivity (1/s/mM)",
                &a.relaxivity,
                "a positive value, e.g. 4.5",
            ));
        }
        if !(0.0..1.0).contains(&p.hematocrit) {
            return Err(meta(
                "pipeline.hematocrit",
                &p.hematocrit,
                "a fraction in [0, 1), e.g. 0.42 (not a percentage)",
            ));
        }
        let f = &p.fitting;
        if f.max_iterations == 0 {
            return Err(meta("pipeline.fitting.max_iterations", &0, "at least 1"));
        }
        if !(f.tolerance > 0.0 && f.tolerance < 1.0) {
            return Err(meta(
                "pipeline.fitting.tolerance",
                &f.tolerance,
                "a value in (0, 1), e.g. 1e-6",
            ));
        }
        if !(f.r2_threshold <= 1.0) {
            return Err(meta(
                "pipeline.fitting.r2_threshold",
                &f.r2_threshold,
                "at most 1 (0.5 by default; -inf keeps every fit)",
            ));
        }
        for (name, [lo, hi]) in &f.bounds {
            if !(lo <= hi) {
                return Err(meta(
                    &format!("pipeline.fitting.bounds.{name}"),
                    &format!("[{lo}, {hi}]"),
                    "[lower, upper] with lower <= upper",
                ));
            }
        }
        Ok(())
    }
}

fn meta(field: &str, found: &dyn std::fmt::Display, expected: &str) -> OsipyError {
    OsipyError::Metadata {
        field: field.into(),
        found: found.to_string(),
        expected: expected.into(),
    }
}

fn one_of(field: &str, value: &str, valid: &[&str]) -> Result<()> {
    if valid.contains(&value) {
        Ok(())
    } else {
        Err(OsipyError::UnknownName {
            kind: field.into(),
            name: value.into(),
            valid: valid.iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// A time in seconds: positive, below `max`; larger values look like ms.
fn seconds(field: &str, v: Option<f64>, max: f64, example: &str) -> Result<()> {
    match v {
        Some(v) if !((v > 0.0 && v < max) || (field == "pipeline.aif_delay" && v == 0.0)) => {
            let hint = if v >= max {
                " (it looks like milliseconds: give seconds)"
            } else {
                ""
            };
            Err(meta(
                &format!("{field} (s)"),
                &v,
                &format!("a positive value in seconds below {max}, e.g. {example}{hint}"),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commented_defaults_parse_to_the_defaults() {
        let c = Config::from_toml(DCE_DEFAULTS).unwrap();
        assert_eq!(c.modality, Modality::Dce);
        assert_eq!(c.dce().unwrap(), &DcePipelineConfig::default());
        let c = Config::from_toml(IVIM_DEFAULTS).unwrap();
        assert_eq!(c.ivim().unwrap(), &IvimPipelineConfig::default());
        assert!(c.dce().is_err());
        // Keys of one modality are unknown in the other, with a suggestion.
        let e = Config::from_toml("modality = \"ivim\"\n[pipeline]\nb_treshold = 150.0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `pipeline.b_threshold`"), "{e}");
        let e = Config::from_toml("modality = \"ivim\"\n[pipeline]\nmodel = \"tofts\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown config key `pipeline.model`"), "{e}");
        let e = Config::from_toml("modality = \"ivim\"\n[pipeline]\nfitting_method = \"bayes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bayesian, full, segmented"), "{e}");
        assert_eq!(c.data, DataConfig::default());
        assert_eq!(c.backend, BackendConfig::default());
    }

    #[test]
    fn misspelled_keys_suggest_the_nearest() {
        let e = Config::from_toml("modality = \"dce\"\n[pipeline]\nmodle = \"tofts\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown config key `pipeline.modle`") && e.contains("did you mean `pipeline.model`"),
            "{e}"
        );
        let e = Config::from_toml("modality = \"dce\"\n[pipeline.acquisition]\nflip_angel = 10.0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("did you mean `pipeline.acquisition.flip_angle`"),
            "{e}"
        );
        let e = Config::from_toml("modality = \"dce\"\n[datta]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `data`"), "{e}");
        let e = Config::from_toml("modality = \"dce\"\n[pipeline]\nzzzzzzzzzz = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("valid keys here:") && e.contains("population_aif"),
            "{e}"
        );
        // Parameter-name tables are free-form here (checked against the model later).
        assert!(
            Config::from_toml("modality = \"dce\"\n[pipeline.fitting]\nbounds = { vp = [0.0, 0.2] }\n")
                .is_ok()
        );
    }

    #[test]
    fn values_are_checked_with_unit_hints_and_valid_names() {
        let bad = |body: &str| {
            Config::from_toml(&format!("modality = \"dce\"\n{body}"))
                .unwrap_err()
                .to_string()
        };
        let e = bad("[pipeline.acquisition]\ntr = 5.0\n");
        assert!(e.contains("milliseconds"), "{e}");
        let e = bad("[pipeline.acquisition]\nt1_assumed = 1400\n");
        assert!(e.contains("milliseconds"), "{e}");
        let e = bad("[pipeline]\nmodel = \"toft\"\n");
        assert!(e.contains("\"toft\"") && e.contains("extended_tofts"), "{e}");
        let e = bad("[pipeline]\npopulation_aif = \"parkr\"\n");
        assert!(e.contains("georgiou"), "{e}");
        let e = bad("[pipeline]\nhematocrit = 42.0\n");
        assert!(e.contains("not a percentage"), "{e}");
        let e = bad("[pipeline.fitting]\nbounds = { vp = [0.5, 0.1] }\n");
        assert!(e.contains("bounds.vp"), "{e}");
        let e = bad("[pipeline]\nmodel = 3\n");
        assert!(e.contains("invalid type"), "{e}");
        let e = Config::from_toml("modality = \"asl\"\n").unwrap_err().to_string();
        assert!(e.contains("\"asl\"") && e.contains("dce, ivim"), "{e}");
        let e = Config::from_toml("modality = \"pet\"\n").unwrap_err().to_string();
        assert!(e.contains("\"pet\""), "{e}");
        assert!(dump_defaults(Modality::Asl).is_err());
    }
}
