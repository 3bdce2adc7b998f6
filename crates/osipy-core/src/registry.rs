//! Typed registries: one table per extension point.
//!
//! Each table maps a snake_case name to an [`Entry`] whose payload is set by
//! the crate that owns the extension point (a model factory, a function...).
//! Tables are separate per [`Kind`], so a DCE config cannot name a DSC
//! deconvolver as its fitter. Crates add entries with their own
//! `register(&mut Registry)`; `osipy-pipeline` assembles the built-in set.

use crate::{OsipyError, Result};
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The extension points of osipy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// DCE pharmacokinetic models.
    DceModel,
    /// T1 mapping methods.
    T1Method,
    /// Signal-to-concentration models.
    ConcentrationModel,
    /// Population arterial input functions.
    PopulationAif,
    /// Automatic AIF detectors.
    AifDetector,
    /// Convolution methods.
    ConvolutionMethod,
    /// Non-linear least-squares fitters.
    Fitter,
    /// DSC deconvolution methods.
    DscDeconvolver,
    /// DSC leakage correctors.
    LeakageCorrector,
    /// Bolus arrival detectors.
    ArrivalDetector,
    /// Signal normalisers.
    Normaliser,
    /// ASL quantification models.
    AslQuantification,
    /// ASL arrival-time models.
    AslAtt,
    /// ASL label/control difference methods.
    AslDifference,
    /// ASL M0 calibration methods.
    AslM0,
    /// IVIM signal models.
    IvimModel,
    /// IVIM fitting strategies.
    IvimFitter,
}

impl Kind {
    /// Every kind, in listing order.
    pub const ALL: [Kind; 17] = [
        Kind::DceModel,
        Kind::T1Method,
        Kind::ConcentrationModel,
        Kind::PopulationAif,
        Kind::AifDetector,
        Kind::ConvolutionMethod,
        Kind::Fitter,
        Kind::DscDeconvolver,
        Kind::LeakageCorrector,
        Kind::ArrivalDetector,
        Kind::Normaliser,
        Kind::AslQuantification,
        Kind::AslAtt,
        Kind::AslDifference,
        Kind::AslM0,
        Kind::IvimModel,
        Kind::IvimFitter,
    ];

    /// snake_case id, as used by `osipy list KIND`.
    pub fn id(&self) -> &'static str {
        match self {
            Kind::DceModel => "dce_models",
            Kind::T1Method => "t1_methods",
            Kind::ConcentrationModel => "concentration_models",
            Kind::PopulationAif => "population_aifs",
            Kind::AifDetector => "aif_detectors",
            Kind::ConvolutionMethod => "convolution_methods",
            Kind::Fitter => "fitters",
            Kind::DscDeconvolver => "dsc_deconvolvers",
            Kind::LeakageCorrector => "leakage_correctors",
            Kind::ArrivalDetector => "arrival_detectors",
            Kind::Normaliser => "normalisers",
            Kind::AslQuantification => "asl_quantification",
            Kind::AslAtt => "asl_att",
            Kind::AslDifference => "asl_difference",
            Kind::AslM0 => "asl_m0",
            Kind::IvimModel => "ivim_models",
            Kind::IvimFitter => "ivim_fitters",
        }
    }

    /// Human-readable singular name, used in error messages.
    pub fn label(&self) -> &'static str {
        match self {
            Kind::DceModel => "DCE model",
            Kind::T1Method => "T1 method",
            Kind::ConcentrationModel => "concentration model",
            Kind::PopulationAif => "population AIF",
            Kind::AifDetector => "AIF detector",
            Kind::ConvolutionMethod => "convolution method",
            Kind::Fitter => "fitter",
            Kind::DscDeconvolver => "DSC deconvolver",
            Kind::LeakageCorrector => "leakage corrector",
            Kind::ArrivalDetector => "arrival detector",
            Kind::Normaliser => "normaliser",
            Kind::AslQuantification => "ASL quantification model",
            Kind::AslAtt => "ASL arrival-time model",
            Kind::AslDifference => "ASL difference method",
            Kind::AslM0 => "ASL M0 calibration",
            Kind::IvimModel => "IVIM model",
            Kind::IvimFitter => "IVIM fitting strategy",
        }
    }

    /// The kind with this id, or an error listing the valid ids.
    pub fn from_id(id: &str) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.id() == id)
            .ok_or_else(|| OsipyError::UnknownName {
                kind: "registry kind".into(),
                name: id.to_string(),
                valid: Kind::ALL.iter().map(|k| k.id().to_string()).collect(),
            })
    }
}

/// One registered method.
#[derive(Clone)]
pub struct Entry {
    /// snake_case name.
    pub name: String,
    /// One-line description with the reference it follows.
    pub description: String,
    payload: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// The payload as its concrete type, if it is one. The crate owning the
    /// extension point knows the type (e.g. `fn(&[f64]) -> Box<dyn Model>`).
    pub fn payload<T: Any>(&self) -> Option<&T> {
        self.payload.downcast_ref::<T>()
    }
}

/// All registries, one table per [`Kind`].
#[derive(Debug, Clone, Default)]
pub struct Registry {
    tables: BTreeMap<Kind, BTreeMap<String, Entry>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `payload` under `name` in the `kind` table. A name already
    /// present in that table is an error (names are unique per kind).
    pub fn register<T: Any + Send + Sync>(
        &mut self,
        kind: Kind,
        name: &str,
        description: &str,
        payload: T,
    ) -> Result<()> {
        let table = self.tables.entry(kind).or_default();
        if table.contains_key(name) {
            return Err(OsipyError::DuplicateName {
                kind: kind.label().into(),
                name: name.into(),
            });
        }
        table.insert(
            name.to_string(),
            Entry {
                name: name.to_string(),
                description: description.to_string(),
                payload: Arc::new(payload),
            },
        );
        Ok(())
    }

    /// The entry `name` of `kind`, or an error listing the valid names.
    pub fn get(&self, kind: Kind, name: &str) -> Result<&Entry> {
        self.tables
            .get(&kind)
            .and_then(|t| t.get(name))
            .ok_or_else(|| OsipyError::UnknownName {
                kind: kind.label().into(),
                name: name.into(),
                valid: self.list(kind).iter().map(|e| e.name.clone()).collect(),
            })
    }

    /// The entries of `kind`, sorted by name.
    pub fn list(&self, kind: Kind) -> Vec<&Entry> {
        self.tables
            .get(&kind)
            .map(|t| t.values().collect())
            .unwrap_or_default()
    }

    /// The names of `kind`, sorted.
    pub fn names(&self, kind: Kind) -> Vec<&str> {
        self.list(kind).into_iter().map(|e| e.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Factory = fn(f64) -> f64;

    #[test]
    fn register_get_list_and_errors() {
        let mut reg = Registry::new();
        reg.register::<Factory>(Kind::DceModel, "tofts", "Tofts 1991", |x| x * 2.0)
            .unwrap();
        reg.register::<Factory>(Kind::DceModel, "patlak", "Patlak 1983", |x| x + 1.0)
            .unwrap();
        assert_eq!(reg.names(Kind::DceModel), ["patlak", "tofts"]);
        let f = reg
            .get(Kind::DceModel, "tofts")
            .unwrap()
            .payload::<Factory>()
            .unwrap();
        assert_eq!(f(2.0), 4.0);
        // Wrong payload type is None, not a panic.
        assert!(reg
            .get(Kind::DceModel, "tofts")
            .unwrap()
            .payload::<String>()
            .is_none());

        let dup = reg
            .register::<Factory>(Kind::DceModel, "tofts", "again", |x| x)
            .unwrap_err()
            .to_string();
        assert!(dup.contains("DCE model \"tofts\" is already registered"), "{dup}");

        let unknown = reg.get(Kind::DceModel, "toftz").unwrap_err().to_string();
        assert!(
            unknown.contains("\"toftz\"") && unknown.contains("patlak, tofts"),
            "{unknown}"
        );
        // Tables are separate: a DCE name is not a DSC deconvolver.
        assert!(reg.get(Kind::DscDeconvolver, "tofts").is_err());
        // The same name may exist in two kinds.
        reg.register::<Factory>(Kind::Fitter, "tofts", "other kind", |x| x)
            .unwrap();
    }

    #[test]
    fn kind_ids_are_unique_and_parse() {
        let mut ids: Vec<_> = Kind::ALL.iter().map(|k| k.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), Kind::ALL.len());
        for k in Kind::ALL {
            assert_eq!(Kind::from_id(k.id()).unwrap(), k);
        }
        assert!(Kind::from_id("models")
            .unwrap_err()
            .to_string()
            .contains("dce_models"));
    }
}
