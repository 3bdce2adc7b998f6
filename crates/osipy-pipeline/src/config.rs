//! The TOML configuration of a run.
//!
//! The tree mirrors Python osipy's YAML (`modality`, `pipeline`, `data`,
//! `output`, `backend`, `logging`) so a config translates line by line, with
//! these differences: values are SI as in BIDS (seconds, degrees; Python uses
//! ms for `tr` and `t1_assumed`), and a value that looks like milliseconds is
//! rejected with a hint; unknown or misspelled keys are errors that suggest the
//! nearest valid key (Python silently accepts them).
//!
//! The `[pipeline]` section and the `[data]` keys belong to the modality
//! (see [`crate::modality`]); the commented template of `dump-defaults` is
//! generated from the modality's structs, example and key comments, so it
//! cannot drift from them.

use crate::modality::{data_roles, modality, role_example, Modality};
use osipy_core::{OsipyError, Registry, Result};
use osipy_io::{choice_names, Choice, DataValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A whole run configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Which modality the pipeline analyses (an id of [`crate::MODALITIES`]).
    pub modality: String,
    /// The modality's `[pipeline]` section, defaults filled in (read it typed
    /// with [`Config::section`]).
    pub pipeline: serde_json::Value,
    /// Input files (or inline values) by role, relative to DATA_PATH or absolute.
    pub data: BTreeMap<String, DataValue>,
    /// Outputs.
    pub output: OutputConfig,
    /// Compute backend.
    pub backend: BackendConfig,
    /// Logging.
    pub logging: LoggingConfig,
}

/// The file as written: `[pipeline]` stays raw until the modality is known.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    // Resolved before the typed parse; kept so the key is not "unknown".
    #[serde(rename = "modality")]
    _modality: String,
    #[serde(default)]
    pipeline: Option<toml::Value>,
    #[serde(default)]
    data: BTreeMap<String, DataValue>,
    #[serde(default)]
    output: OutputConfig,
    #[serde(default)]
    backend: BackendConfig,
    #[serde(default)]
    logging: LoggingConfig,
}

/// Outputs (`[output]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Output format.
    pub format: OutputFormat,
    /// gzip the images (`.nii.gz`); `false` writes plain `.nii`, faster.
    pub compress: bool,
    /// Write `report.html` and `figures/` (the CLI's `--no-report` overrides).
    pub report: bool,
    /// Display range [low, high] of a map's figure, by map name; other maps
    /// show their 2nd-98th percentile within the mask.
    pub report_ranges: BTreeMap<String, [f64; 2]>,
    /// Voxels [x, y, z] (from 0) whose curves the report shows besides the
    /// median- and lowest-R^2 voxels.
    pub report_voxels: Vec<[usize; 3]>,
}

/// Output formats (`output.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// `.nii.gz` maps with JSON sidecars.
    #[default]
    Nifti,
    /// A BIDS-derivatives dataset: the output folder is its root and this
    /// run writes `sub-<label>[/ses-<label>]/<datatype>/` (needs
    /// `data.format = "bids"`; see [`osipy_io::bids`]).
    Bids,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            format: OutputFormat::Nifti,
            compress: true,
            report: true,
            report_ranges: BTreeMap::new(),
            report_voxels: Vec::new(),
        }
    }
}

/// Compute devices (`backend.device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// The CPU (rayon worker threads).
    #[default]
    Cpu,
    /// The first CUDA GPU (the `cuda` build); an error when it cannot be
    /// used. Another GPU: `--device cuda:N` or `CUDA_VISIBLE_DEVICES`.
    Cuda,
    /// The first CUDA GPU when one answers, else the CPU (logged).
    Auto,
}

impl From<DeviceChoice> for osipy_backend::DeviceChoice {
    fn from(c: DeviceChoice) -> Self {
        match c {
            DeviceChoice::Cpu => osipy_backend::DeviceChoice::Cpu,
            DeviceChoice::Cuda => osipy_backend::DeviceChoice::Cuda(0),
            DeviceChoice::Auto => osipy_backend::DeviceChoice::Auto,
        }
    }
}

/// Compute backend (`[backend]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Device.
    pub device: DeviceChoice,
    /// Worker threads; 0 = `OSIPY_NUM_THREADS` or all cores.
    pub threads: usize,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            device: DeviceChoice::Cpu,
            threads: 0,
        }
    }
}

/// Log levels (`logging.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Progress messages.
    #[default]
    Info,
    /// Details.
    Debug,
    /// Everything.
    Trace,
}

/// Logging (`[logging]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Level.
    pub level: LogLevel,
    /// Fraction of the mask's voxels above which invalid voxels are
    /// reported as a warning with their counts per reason.
    pub warn_invalid_fraction: f64,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LogLevel::default(),
            warn_invalid_fraction: 0.5,
        }
    }
}

impl Choice for OutputFormat {
    const ALL: &'static [Self] = &[OutputFormat::Nifti, OutputFormat::Bids];
}

impl Choice for DeviceChoice {
    const ALL: &'static [Self] = &[DeviceChoice::Cpu, DeviceChoice::Cuda, DeviceChoice::Auto];
}

impl Choice for LogLevel {
    const ALL: &'static [Self] = &[
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];
}

/// Comments of the shared sections, by dotted path.
const COMMON_DOCS: &[(&str, &str)] = &[
    ("output.format", "{choices}: nifti = maps and sidecars in the output folder; bids = a BIDS-derivatives dataset (needs data.format = \"bids\")"),
    (
        "output.compress",
        "true: .nii.gz; false: plain .nii (faster, larger)",
    ),
    (
        "output.report",
        "write report.html and figures/ (--no-report skips)",
    ),
    (
        "output.report_ranges",
        "figure range per map, e.g. { Ktrans = [0.0, 0.3] }; default 2nd-98th percentile",
    ),
    (
        "output.report_voxels",
        "voxels [x, y, z] (from 0) to plot curves of, e.g. [[10, 12, 3]]",
    ),
    ("backend.device", "{choices}"),
    ("backend.threads", "0 = OSIPY_NUM_THREADS or all cores"),
    ("logging.level", "{choices}"),
    (
        "logging.warn_invalid_fraction",
        "warn when more of the mask than this is invalid",
    ),
];

/// The closed choices of the shared sections, by dotted key.
pub fn common_choices() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("output.format", choice_names::<OutputFormat>()),
        ("backend.device", choice_names::<DeviceChoice>()),
        ("logging.level", choice_names::<LogLevel>()),
    ]
}

/// The commented default configuration of modality `id` (every key, its
/// unit), generated from the modality's config struct, example and comments.
pub fn dump_defaults(id: &str) -> Result<String> {
    let m = modality(id)?;
    template(m, &crate::builtin_registry()?)
}

const COMMENT_COLUMN: usize = 34;

fn line(out: &mut String, text: &str, comment: &str) {
    let pad = COMMENT_COLUMN.saturating_sub(text.len() + 1).max(1);
    if comment.is_empty() {
        out.push_str(text);
    } else {
        out.push_str(&format!("{text}{}# {comment}", " ".repeat(pad)));
    }
    out.push('\n');
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) if t.is_empty() => "{}".into(),
        // Small tolerances read better as 1e-6 than 0.000001.
        toml::Value::Float(f) if *f != 0.0 && f.abs() < 1e-3 => format!("{f:e}"),
        other => other.to_string(),
    }
}

/// Renders `[header]` from the example table: keys present in the defaults
/// as they are, the others commented out with their example value;
/// sub-tables (not free-form parameter tables) as `[header.key]` after.
fn render(
    out: &mut String,
    header: &str,
    defaults: &toml::Value,
    example: &toml::Value,
    doc: &dyn Fn(&str) -> Result<String>,
) -> Result<()> {
    let (Some(ex), d) = (example.as_table(), defaults.as_table()) else {
        return Ok(());
    };
    let section_doc = if header.contains('.') || header == "pipeline" {
        let key = header.trim_start_matches("pipeline").trim_start_matches('.');
        if key.is_empty() {
            String::new()
        } else {
            doc(&format!("pipeline.{key}"))?
        }
    } else {
        String::new()
    };
    line(out, &format!("[{header}]"), &section_doc);
    let mut subtables = Vec::new();
    for (key, value) in ex {
        let path = format!("{header}.{key}");
        if value.is_table() && !FREE_TABLES.contains(&path.as_str()) {
            subtables.push((path, key));
            continue;
        }
        let comment = doc(&path)?;
        match d.and_then(|d| d.get(key)) {
            Some(dv) => line(out, &format!("{key} = {}", value_text(dv)), &comment),
            None => line(out, &format!("# {key} = {}", value_text(value)), &comment),
        }
    }
    for (path, key) in subtables {
        out.push('\n');
        let dsub = defaults
            .get(key)
            .cloned()
            .unwrap_or(toml::Value::Table(Default::default()));
        render(out, &path, &dsub, &ex[key.as_str()], doc)?;
    }
    Ok(())
}

/// The commented template of `m`.
pub fn template(m: &dyn Modality, registry: &Registry) -> Result<String> {
    let (defaults, example) = m.defaults_and_example()?;
    let names: BTreeMap<String, String> = registry
        .tables()
        .into_iter()
        .map(|(info, entries)| {
            let names: Vec<String> = entries.into_iter().map(|e| e.name).collect();
            (format!("{{{}}}", info.id), names.join(" | "))
        })
        .collect();
    let doc = |path: &str| -> Result<String> {
        let found = m
            .docs()
            .iter()
            .find(|(k, _)| path.strip_prefix("pipeline.") == Some(*k))
            .or_else(|| COMMON_DOCS.iter().find(|(k, _)| *k == path))
            .map(|(_, c)| c.to_string());
        let mut c = found.ok_or_else(|| {
            OsipyError::Validation(format!("modality {}: config key `{path}` has no comment", m.id()))
        })?;
        if c.contains("{choices}") {
            let key = path.strip_prefix("pipeline.").unwrap_or(path);
            let list = m
                .choices()
                .into_iter()
                .chain(common_choices())
                .find(|(k, _)| *k == key)
                .map(|(_, names)| names.join(" | "))
                .ok_or_else(|| {
                    OsipyError::Validation(format!("modality {}: `{path}` has no choices to list", m.id()))
                })?;
            c = c.replace("{choices}", &list);
        }
        for (placeholder, list) in &names {
            c = c.replace(placeholder, list);
        }
        Ok(c)
    };
    let mut out = format!(
        "# osipy configuration: {}. {}.\nmodality = \"{}\"\n\n",
        m.name(),
        m.units(),
        m.id()
    );
    render(&mut out, "pipeline", &defaults, &example, &doc)?;
    out.push('\n');
    line(
        &mut out,
        "[data]",
        "relative to DATA_PATH or absolute; a folder is read as DICOM; unset roles are discovered",
    );
    for spec in data_roles(m) {
        line(
            &mut out,
            &format!("# {} = {}", spec.role, spec.example),
            spec.description,
        );
    }
    for (name, value) in [
        ("output", toml::Value::try_from(OutputConfig::default())),
        ("backend", toml::Value::try_from(BackendConfig::default())),
        ("logging", toml::Value::try_from(LoggingConfig::default())),
    ] {
        let value = value.map_err(|e| OsipyError::Validation(e.to_string()))?;
        out.push('\n');
        render(&mut out, name, &value, &value, &doc)?;
    }
    Ok(out)
}

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

/// The valid key tree of modality `m`: its example section (every optional
/// key set), its data roles and the shared sections.
fn schema(m: &dyn Modality) -> Result<toml::Value> {
    let (_, example) = m.defaults_and_example()?;
    let mut root = toml::map::Map::new();
    root.insert("modality".into(), toml::Value::String(String::new()));
    root.insert("pipeline".into(), example);
    let data: toml::map::Map<String, toml::Value> = data_roles(m)
        .iter()
        .map(|s| (s.role.to_string(), role_example(s)))
        .collect();
    root.insert("data".into(), toml::Value::Table(data));
    let shared = |v: std::result::Result<toml::Value, toml::ser::Error>| {
        v.map_err(|e| OsipyError::Validation(e.to_string()))
    };
    root.insert(
        "output".into(),
        shared(toml::Value::try_from(OutputConfig::default()))?,
    );
    root.insert(
        "backend".into(),
        shared(toml::Value::try_from(BackendConfig::default()))?,
    );
    root.insert(
        "logging".into(),
        shared(toml::Value::try_from(LoggingConfig::default()))?,
    );
    Ok(toml::Value::Table(root))
}

/// Tables whose keys are parameter names (checked later against the model).
const FREE_TABLES: [&str; 4] = [
    "pipeline.fitting.bounds",
    "pipeline.links",
    "pipeline.fitting.initial_guess",
    "output.report_ranges",
];

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

/// The first key whose value has another kind than the schema's example,
/// as a message naming the key, what was found and what is valid (a whole
/// number is accepted where a number is expected).
fn type_mismatch(value: &toml::Value, schema: &toml::Value, path: &str) -> Option<String> {
    let (table, valid) = (value.as_table()?, schema.as_table()?);
    for (key, v) in table {
        let full = join(path, key);
        let Some(s) = valid.get(key) else { continue };
        if FREE_TABLES.contains(&full.as_str()) {
            continue;
        }
        if let (Some(_), Some(_)) = (v.as_table(), s.as_table()) {
            if let Some(m) = type_mismatch(v, s, &full) {
                return Some(m);
            }
            continue;
        }
        let kind = |x: &toml::Value| match x {
            toml::Value::String(_) => "a string",
            toml::Value::Integer(_) => "a whole number",
            toml::Value::Float(_) => "a number",
            toml::Value::Boolean(_) => "true or false",
            toml::Value::Datetime(_) => "a date",
            toml::Value::Array(_) => "a list",
            toml::Value::Table(_) => "a table",
        };
        let same = std::mem::discriminant(v) == std::mem::discriminant(s)
            || matches!((v, s), (toml::Value::Integer(_), toml::Value::Float(_)));
        if !same {
            return Some(format!(
                "config key `{full}`: found {} {}; expected {}, e.g. `{full} = {}`",
                kind(v),
                value_text(v),
                kind(s),
                value_text(s)
            ));
        }
    }
    None
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
        Config::parse(text, &crate::builtin_registry()?)
    }

    /// [`Config::from_toml`] with names checked against `registry` (the
    /// built-in one plus entries of your own).
    pub fn parse(text: &str, registry: &Registry) -> Result<Config> {
        let value: toml::Value = toml::from_str(text)
            .map_err(|e| OsipyError::Validation(format!("config is not valid TOML: {e}")))?;
        let id = value.get("modality").and_then(|m| m.as_str()).ok_or_else(|| {
            OsipyError::Validation(format!(
                "config: missing key `modality`; valid: {}",
                crate::modality::ids().join(", ")
            ))
        })?;
        let m = modality(id)?;
        let schema = schema(m)?;
        check_keys(&value, &schema, "")?;
        // A value of the wrong type is named by its key (serde names only
        // the section).
        let named = |e: OsipyError| type_mismatch(&value, &schema, "").map_or(e, OsipyError::Validation);
        let raw: RawConfig = value.clone().try_into().map_err(|e: toml::de::Error| {
            named(OsipyError::Validation(format!("config: {}", e.message())))
        })?;
        let table = raw
            .pipeline
            .unwrap_or_else(|| toml::Value::Table(Default::default()));
        let config = Config {
            modality: m.id().to_string(),
            pipeline: m.parse(table).map_err(named)?,
            data: raw.data,
            output: raw.output,
            backend: raw.backend,
            logging: raw.logging,
        };
        config.validate_with(registry)?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &std::path::Path) -> Result<Config> {
        let text = osipy_io::read_text_file(path)?;
        Config::from_toml(&text).map_err(|e| match e {
            OsipyError::Validation(m) => OsipyError::Validation(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The modality's table entry.
    pub fn modality_def(&self) -> Result<&'static dyn Modality> {
        modality(&self.modality)
    }

    /// The `[pipeline]` section as the modality's config type (e.g.
    /// `osipy_dce::DceConfig`); an error when it is another modality's.
    pub fn section<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.pipeline.clone()).map_err(|e| {
            OsipyError::Validation(format!(
                "the [pipeline] section of this {} configuration does not fit the type asked for: {e}",
                self.modality
            ))
        })
    }

    /// Checks names against the built-in registry and values against their units.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(&crate::builtin_registry()?)
    }

    /// Checks names against `registry` and values against their units.
    pub fn validate_with(&self, registry: &Registry) -> Result<()> {
        osipy_io::Inputs::check(self.modality_def()?.inputs(), &self.data)?;
        let f = self.logging.warn_invalid_fraction;
        if !(0.0..=1.0).contains(&f) {
            return Err(OsipyError::metadata(
                "logging.warn_invalid_fraction",
                f,
                "a fraction in [0, 1], e.g. 0.5",
            ));
        }
        for (name, [lo, hi]) in &self.output.report_ranges {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(OsipyError::metadata(
                    format!("output.report_ranges.{name}"),
                    format!("[{lo}, {hi}]"),
                    "[low, high] with finite low < high, in the map's unit",
                ));
            }
        }
        self.modality_def()?.validate(&self.pipeline, registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dotted paths of every key below `[pipeline]` in `v`.
    fn paths(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        if let Some(t) = v.as_table() {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if !FREE_TABLES.contains(&format!("pipeline.{p}").as_str()) {
                    paths(v, &p, out);
                }
                out.push(p);
            }
        }
    }

    #[test]
    fn every_template_parses_to_its_defaults_and_documents_every_key() {
        let reg = crate::builtin_registry().unwrap();
        for m in crate::MODALITIES {
            let text = template(*m, &reg).unwrap();
            let c = Config::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", m.id()));
            assert_eq!(c.modality, m.id());
            let (defaults, example) = m.defaults_and_example().unwrap();
            let empty = m.parse(toml::Value::Table(Default::default())).unwrap();
            assert_eq!(c.pipeline, empty, "{}", m.id());
            assert_eq!(m.parse(defaults).unwrap(), empty, "{}", m.id());
            assert!(c.data.is_empty() && c.backend == BackendConfig::default());
            // One comment per key, and no comment for a key that does not exist.
            let mut keys = Vec::new();
            paths(&example, "", &mut keys);
            for (doc_key, _) in m.docs() {
                assert!(
                    keys.iter().any(|k| k == doc_key),
                    "{}: comment for unknown key {doc_key}",
                    m.id()
                );
            }
            for k in &keys {
                assert!(
                    m.docs().iter().any(|(d, _)| d == k),
                    "{}: key {k} has no comment",
                    m.id()
                );
            }
            // Every placeholder expanded; every choice names a key.
            assert!(
                !text.contains("{choices}") && !text.contains("{dce_models}"),
                "{text}"
            );
            for (k, names) in m.choices() {
                assert!(
                    keys.iter().any(|x| x == k) && !names.is_empty(),
                    "{}: choice {k}",
                    m.id()
                );
            }
            // Registry-backed keys list the registered names.
            if m.id() == "dce" {
                assert!(
                    text.contains("2cum | 2cxm | extended_tofts | patlak | tofts"),
                    "{text}"
                );
            }
        }
        let c = Config::from_toml(&dump_defaults("ivim").unwrap()).unwrap();
        assert_eq!(
            c.section::<osipy_ivim::IvimConfig>().unwrap(),
            osipy_ivim::IvimConfig::default()
        );
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
        let e = Config::from_toml("modality = \"ivim\"\n[data]\ndynamic = \"x.nii\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown config key `data.dynamic`"), "{e}");
        let e = Config::from_toml("[pipeline]\n").unwrap_err().to_string();
        assert!(
            e.contains("missing key `modality`") && e.contains("dce, ivim"),
            "{e}"
        );
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
        let e = bad("[pipeline.acquisition]\nflip_angles = [2.0, 200.0]\n");
        assert!(
            e.contains("pipeline.acquisition.flip_angles") && e.contains("(0, 180)"),
            "{e}"
        );
        let e = bad("[pipeline]\nhematocrit = 42.0\n");
        assert!(e.contains("not a percentage"), "{e}");
        let e = bad("[pipeline.fitting]\nbounds = { vp = [0.5, 0.1] }\n");
        assert!(e.contains("bounds.vp"), "{e}");
        let e = bad("[pipeline]\nmodel = 3\n");
        assert!(
            e.contains("`pipeline.model`")
                && e.contains("found a whole number 3")
                && e.contains("expected a string"),
            "{e}"
        );
        let e = bad("[pipeline.fitting]\nmax_iterations = \"many\"\n");
        assert!(
            e.contains("`pipeline.fitting.max_iterations`")
                && e.contains("\"many\"")
                && e.contains("whole number"),
            "{e}"
        );
        let e = bad("[backend]\nthreads = 1.5\n");
        assert!(
            e.contains("`backend.threads`") && e.contains("found a number 1.5"),
            "{e}"
        );
        // A key of another section is not suggested for a key that has no
        // near neighbour here (DCE takes TE nowhere; `tr` is no fix for `te`).
        // What `run` would refuse before reading data, `validate` refuses.
        let e = bad("[data]\nb_values = [0.0, 100.0]\n");
        assert!(e.contains("b_values"), "{e}");
        let e = Config::from_toml("modality = \"dce\"\n[data]\ndynamic = [1.0, 2.0]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.dynamic must be a file path"), "{e}");
        let e = bad("[pipeline]\nte = 30\n");
        assert!(e.contains("`pipeline.te`") && !e.contains("did you mean"), "{e}");
        let e = Config::from_toml("modality = \"pet\"\n").unwrap_err().to_string();
        assert!(e.contains("\"pet\"") && e.contains("dce, ivim, dsc, asl"), "{e}");
        assert!(dump_defaults("pet").is_err());
        let e = bad("[pipeline]\nconcentration = \"spgrr\"\n");
        assert!(e.contains("spgrr") && e.contains("linear"), "{e}");
    }
}
