//! The table of modalities: the one place that lists them.
//!
//! Each modality crate implements [`osipy_io::ModalityDef`]; [`Seam`] erases
//! its config type so the table can hold every modality side by side. Config
//! parsing, [`crate::run_analysis`], `dump-defaults`, `validate`, `list`,
//! `demo` and xtask's `dro-validate` / `bench-compare` all go through
//! [`MODALITIES`]: adding a modality is one line here.

use osipy_core::{OsipyError, Registry, Result};
use osipy_io::{DemoCase, DroRow, InputKind, InputSpec, Inputs, ModalityDef, Outputs, RunContext};
use std::marker::PhantomData;

/// Every modality with a pipeline in this build, in listing order.
pub static MODALITIES: &[&dyn Modality] = &[
    &Seam::<osipy_dce::Dce>::NEW,
    &Seam::<osipy_ivim::Ivim>::NEW,
    &Seam::<osipy_dsc::Dsc>::NEW,
    &Seam::<osipy_asl::Asl>::NEW,
    &Seam::<osipy_microstructure::Microstructure>::NEW,
];

/// The modality called `id`, or an error listing the ids of this build.
pub fn modality(id: &str) -> Result<&'static dyn Modality> {
    MODALITIES
        .iter()
        .copied()
        .find(|m| m.id().eq_ignore_ascii_case(id.trim()))
        .ok_or_else(|| OsipyError::UnknownName {
            kind: "modality with a pipeline in this build".into(),
            name: id.into(),
            valid: ids(),
        })
}

/// The ids of [`MODALITIES`].
pub fn ids() -> Vec<String> {
    MODALITIES.iter().map(|m| m.id().to_string()).collect()
}

/// A modality with its config type erased: the section travels as the JSON
/// value of the typed struct (defaults filled in), re-read as the struct
/// where it is used.
pub trait Modality: Send + Sync {
    /// Config and command-line id.
    fn id(&self) -> &'static str;
    /// Human name (`DCE-MRI`).
    fn name(&self) -> &'static str;
    /// The units of the section, in words.
    fn units(&self) -> &'static str;
    /// Input roles besides `mask`.
    fn inputs(&self) -> &'static [InputSpec];
    /// BIDS datatype folder of its inputs and maps (`perf`, `dwi`).
    fn bids_datatype(&self) -> &'static str;
    /// Parses a `[pipeline]` table into the canonical section.
    fn parse(&self, table: toml::Value) -> Result<serde_json::Value>;
    /// The defaults and the example (every optional key set) as TOML.
    fn defaults_and_example(&self) -> Result<(toml::Value, toml::Value)>;
    /// Comment per key of the section.
    fn docs(&self) -> &'static [(&'static str, &'static str)];
    /// Checks the section against the registry and units.
    fn validate(&self, section: &serde_json::Value, registry: &Registry) -> Result<()>;
    /// The main choice, for `osipy validate`.
    fn describe(&self, section: &serde_json::Value) -> Result<String>;
    /// Runs the analysis.
    fn run(
        &self,
        section: &serde_json::Value,
        inputs: &Inputs,
        ctx: &mut RunContext,
        registry: &Registry,
    ) -> Result<Outputs>;
    /// The demo case.
    fn demo(&self) -> Result<DemoCase>;
    /// Phantom checks for `dro-validate`.
    fn phantom_checks(&self, registry: &Registry) -> Result<Vec<DroRow>>;
    /// Closed choices of the section, by dotted key below `[pipeline]`.
    fn choices(&self) -> Vec<(&'static str, Vec<String>)>;
}

/// The table entry of modality `M`.
pub struct Seam<M>(PhantomData<fn() -> M>);

impl<M> Seam<M> {
    /// The entry (a constant, for the static table).
    pub const NEW: Seam<M> = Seam(PhantomData);
}

fn config_error(e: impl std::fmt::Display) -> OsipyError {
    OsipyError::Validation(format!("config: [pipeline]: {e}"))
}

impl<M: ModalityDef> Seam<M> {
    fn typed(section: &serde_json::Value) -> Result<M::Config> {
        serde_json::from_value(section.clone()).map_err(config_error)
    }
}

impl<M: ModalityDef> Modality for Seam<M> {
    fn id(&self) -> &'static str {
        M::INFO.id
    }
    fn name(&self) -> &'static str {
        M::INFO.name
    }
    fn units(&self) -> &'static str {
        M::INFO.units
    }
    fn inputs(&self) -> &'static [InputSpec] {
        M::INFO.inputs
    }
    fn bids_datatype(&self) -> &'static str {
        M::INFO.bids_datatype
    }
    fn parse(&self, table: toml::Value) -> Result<serde_json::Value> {
        let typed: M::Config = table
            .try_into()
            .map_err(|e: toml::de::Error| config_error(e.message()))?;
        serde_json::to_value(typed).map_err(config_error)
    }
    fn defaults_and_example(&self) -> Result<(toml::Value, toml::Value)> {
        let d = toml::Value::try_from(M::Config::default()).map_err(config_error)?;
        let e = toml::Value::try_from(M::config_example()).map_err(config_error)?;
        Ok((d, e))
    }
    fn docs(&self) -> &'static [(&'static str, &'static str)] {
        M::INFO.config_docs
    }
    fn validate(&self, section: &serde_json::Value, registry: &Registry) -> Result<()> {
        M::validate(&Self::typed(section)?, registry)
    }
    fn describe(&self, section: &serde_json::Value) -> Result<String> {
        Ok(M::describe(&Self::typed(section)?))
    }
    fn run(
        &self,
        section: &serde_json::Value,
        inputs: &Inputs,
        ctx: &mut RunContext,
        registry: &Registry,
    ) -> Result<Outputs> {
        M::run(&Self::typed(section)?, inputs, ctx, registry)
    }
    fn demo(&self) -> Result<DemoCase> {
        M::demo()
    }
    fn phantom_checks(&self, registry: &Registry) -> Result<Vec<DroRow>> {
        M::phantom_checks(registry)
    }
    fn choices(&self) -> Vec<(&'static str, Vec<String>)> {
        M::choices()
    }
}

/// The `[data]` keys of a modality: its roles and `mask`.
pub(crate) fn data_roles(m: &dyn Modality) -> Vec<InputSpec> {
    m.inputs().iter().copied().chain(osipy_io::SHARED).collect()
}

/// The example value of a role as TOML (a path string or a list).
pub(crate) fn role_example(spec: &InputSpec) -> toml::Value {
    match spec.kind {
        InputKind::File => toml::Value::String(String::new()),
        InputKind::Values => toml::Value::Array(Vec::new()),
        InputKind::Selector | InputKind::Text => toml::Value::String(String::new()),
    }
}
