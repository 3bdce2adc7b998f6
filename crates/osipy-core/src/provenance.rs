//! Where a result came from: software version, methods and settings.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Provenance of a parameter map or run, written into JSON sidecars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Software name and version, e.g. `osipy 0.1.0`.
    pub software: String,
    /// Methods used, by role, e.g. `{"model": "extended_tofts", "fitter": "lm"}`.
    pub methods: BTreeMap<String, String>,
    /// Settings that shaped the result (JSON values, units in the key names).
    pub settings: BTreeMap<String, serde_json::Value>,
}

impl Default for Provenance {
    fn default() -> Self {
        Provenance {
            software: format!("osipy {}", env!("CARGO_PKG_VERSION")),
            methods: BTreeMap::new(),
            settings: BTreeMap::new(),
        }
    }
}

impl Provenance {
    /// Adds a method under a role (builder style).
    pub fn with_method(mut self, role: &str, name: &str) -> Self {
        self.methods.insert(role.to_string(), name.to_string());
        self
    }

    /// Adds a setting (builder style).
    pub fn with_setting(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.settings.insert(key.to_string(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_this_version_and_builder_records() {
        let p = Provenance::default()
            .with_method("fitter", "lm")
            .with_setting("max_iterations", 100);
        assert_eq!(p.software, format!("osipy {}", env!("CARGO_PKG_VERSION")));
        assert_eq!(p.methods["fitter"], "lm");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["settings"]["max_iterations"], 100);
    }
}
