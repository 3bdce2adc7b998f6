//! Per-voxel quality codes shared by every fitter and map.

use serde::{Deserialize, Serialize};

/// Why a voxel has (or lacks) a valid value. Stored as `u8` in quality masks
/// and written to `quality_mask.nii.gz` with these numeric codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum QualityCode {
    /// Outside the analysis mask: never fitted.
    NotFitted = 0,
    /// Fit converged; the value is valid.
    Converged = 1,
    /// Fit converged with at least one parameter on a bound; the value is
    /// kept (a bound can be physiological, e.g. vp = 0) but flagged.
    AtBound = 2,
    /// Iteration limit reached before convergence; the value is not trusted.
    MaxIterations = 3,
    /// The voxel's data contained NaN or infinite samples.
    NonFiniteInput = 4,
    /// The normal equations were singular (parameters not identifiable).
    Singular = 5,
    /// R^2 fell below the configured threshold.
    LowR2 = 6,
    /// The model could not be evaluated (non-finite prediction).
    ModelFailure = 7,
    /// The signal is non-positive or otherwise outside the model's domain.
    InvalidSignal = 8,
}

impl QualityCode {
    /// All codes in numeric order.
    pub const ALL: [QualityCode; 9] = [
        QualityCode::NotFitted,
        QualityCode::Converged,
        QualityCode::AtBound,
        QualityCode::MaxIterations,
        QualityCode::NonFiniteInput,
        QualityCode::Singular,
        QualityCode::LowR2,
        QualityCode::ModelFailure,
        QualityCode::InvalidSignal,
    ];

    /// Whether a voxel with this code carries a value (not NaN).
    pub fn is_valid(self) -> bool {
        matches!(self, QualityCode::Converged | QualityCode::AtBound)
    }

    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The code for a number, if it is one.
    pub fn from_code(code: u8) -> Option<QualityCode> {
        QualityCode::ALL.get(code as usize).copied()
    }

    /// snake_case name used in run summaries.
    pub fn name(self) -> &'static str {
        match self {
            QualityCode::NotFitted => "not_fitted",
            QualityCode::Converged => "converged",
            QualityCode::AtBound => "at_bound",
            QualityCode::MaxIterations => "max_iterations",
            QualityCode::NonFiniteInput => "non_finite_input",
            QualityCode::Singular => "singular",
            QualityCode::LowR2 => "low_r2",
            QualityCode::ModelFailure => "model_failure",
            QualityCode::InvalidSignal => "invalid_signal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_validity() {
        for q in QualityCode::ALL {
            assert_eq!(QualityCode::from_code(q.code()), Some(q));
        }
        assert_eq!(QualityCode::from_code(200), None);
        let valid: Vec<_> = QualityCode::ALL.iter().filter(|q| q.is_valid()).collect();
        assert_eq!(valid, [&QualityCode::Converged, &QualityCode::AtBound]);
    }
}
