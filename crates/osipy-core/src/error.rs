//! The one error type of the osipy library crates below the modalities.

use std::path::PathBuf;

/// Everything that can go wrong in osipy as a whole-call error.
///
/// Per-voxel problems (a fit that does not converge, a NaN sample) are *not*
/// errors: they go to the quality mask of a [`crate::ParameterMap`]. Every
/// message names the offending value and what would have been valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OsipyError {
    /// Input arrays or values are inconsistent or out of their valid domain.
    #[error("invalid data: {what} is {found}; expected {expected}")]
    DataValidation {
        /// What was checked (e.g. "time points").
        what: String,
        /// What was found (with the value).
        found: String,
        /// What is valid.
        expected: String,
    },
    /// A fitting setup problem for the whole call (not a per-voxel failure).
    #[error("fitting error: {0}")]
    Fitting(String),
    /// Acquisition metadata is missing, contradictory or implausible.
    #[error("metadata error: {field} = {found}; expected {expected}")]
    Metadata {
        /// The metadata field, e.g. "repetition time".
        field: String,
        /// The value found.
        found: String,
        /// What is valid (often with a hint on units).
        expected: String,
    },
    /// Arterial-input-function problem (bad parameters, detection failure).
    #[error("AIF error: {0}")]
    Aif(String),
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What went wrong, in words.
        message: String,
        /// The underlying I/O error, when there is one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A validation against reference data failed (tolerance broken).
    #[error("validation failed: {0}")]
    Validation(String),
    /// A required parameter was not given.
    #[error("missing parameter {name}: needed for {needed_for}; {hint}")]
    MissingParameter {
        /// Parameter name as the user would write it.
        name: String,
        /// What needs it.
        needed_for: String,
        /// How to provide it.
        hint: String,
    },
    /// A registry lookup for a name that does not exist.
    #[error("unknown {kind} {name:?}; valid names: {}", valid.join(", "))]
    UnknownName {
        /// The registry kind, e.g. "DCE model".
        kind: String,
        /// The name asked for.
        name: String,
        /// The names that exist.
        valid: Vec<String>,
    },
    /// A registration under a name that is already taken.
    #[error("{kind} {name:?} is already registered; names must be unique")]
    DuplicateName {
        /// The registry kind.
        kind: String,
        /// The name that was registered twice.
        name: String,
    },
    /// The compute backend failed (thread pool, device).
    #[error(transparent)]
    Backend(#[from] osipy_backend::BackendError),
}

impl OsipyError {
    /// Shorthand for [`OsipyError::DataValidation`].
    pub fn data(what: impl Into<String>, found: impl Into<String>, expected: impl Into<String>) -> Self {
        OsipyError::DataValidation {
            what: what.into(),
            found: found.into(),
            expected: expected.into(),
        }
    }

    /// Shorthand for [`OsipyError::Metadata`].
    pub fn metadata(
        field: impl Into<String>,
        found: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        OsipyError::Metadata {
            field: field.into(),
            found: found.to_string(),
            expected: expected.into(),
        }
    }

    /// Shorthand for [`OsipyError::Io`] without an underlying error.
    pub fn io(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        OsipyError::Io {
            path: path.into(),
            message: message.into(),
            source: None,
        }
    }
}

/// Result alias used across osipy.
pub type Result<T, E = OsipyError> = std::result::Result<T, E>;
