//! # osipy-asl
//!
//! Arterial spin labeling (ASL) MRI.
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

pub mod dual;
pub mod kinetics;
pub mod multi_pld;
pub mod signal;
