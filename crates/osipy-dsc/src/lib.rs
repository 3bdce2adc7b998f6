//! # osipy-dsc
//!
//! Dynamic susceptibility contrast (DSC) MRI.

pub mod deconv;
pub mod perfusion;
pub mod signal;
