//! The four perfusion modalities.

use serde::{Deserialize, Serialize};

/// An MRI perfusion modality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Dynamic contrast-enhanced MRI (T1-weighted).
    Dce,
    /// Dynamic susceptibility contrast MRI (T2*-weighted).
    Dsc,
    /// Arterial spin labelling.
    Asl,
    /// Intravoxel incoherent motion diffusion MRI.
    Ivim,
}

impl Modality {
    /// All modalities, in a fixed order.
    pub const ALL: [Modality; 4] = [Modality::Dce, Modality::Dsc, Modality::Asl, Modality::Ivim];

    /// Lower-case name as used in configs and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Modality::Dce => "dce",
            Modality::Dsc => "dsc",
            Modality::Asl => "asl",
            Modality::Ivim => "ivim",
        }
    }
}

impl std::fmt::Display for Modality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Modality {
    type Err = crate::OsipyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Modality::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| crate::OsipyError::UnknownName {
                kind: "modality".into(),
                name: s.to_string(),
                valid: Modality::ALL.iter().map(|m| m.as_str().to_string()).collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_lists_valid_ones() {
        assert_eq!("DCE".parse::<Modality>().unwrap(), Modality::Dce);
        assert_eq!("ivim".parse::<Modality>().unwrap(), Modality::Ivim);
        let msg = "pet".parse::<Modality>().unwrap_err().to_string();
        assert!(
            msg.contains("\"pet\"") && msg.contains("dce, dsc, asl, ivim"),
            "{msg}"
        );
    }
}
