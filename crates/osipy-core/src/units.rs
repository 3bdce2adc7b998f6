//! Units and the few conversions osipy needs, each named and tested once.
//!
//! Public API time is in seconds. Rate constants are reported in CAPLEX units
//! (1/min), flows in ml/100ml/min, diffusivities in mm^2/s.

use serde::{Deserialize, Serialize};

/// Physical unit of a parameter map or input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Unit {
    /// Dimensionless quantity (fractions such as ve, vp, f).
    Dimensionless,
    /// Seconds.
    Seconds,
    /// Inverse seconds (1/s), e.g. R1.
    PerSecond,
    /// Inverse minutes (1/min), e.g. Ktrans, kep, PS.
    PerMinute,
    /// Millimolar (mM = mmol/l).
    Millimolar,
    /// ml/100ml/min (plasma or blood flow).
    Ml100mlMin,
    /// ml/100g/min (CBF in ASL/DSC).
    Ml100gMin,
    /// ml/100ml (blood volume).
    Ml100ml,
    /// ml/100g (CBV in DSC, with the tissue density).
    Ml100g,
    /// mm^2/s (diffusivity).
    Mm2PerSecond,
    /// s/mm^2 (b-value).
    SecondsPerMm2,
    /// Degrees (flip angles).
    Degrees,
    /// Radians (orientation angles).
    Radians,
    /// Micrometres (compartment radii and sizes).
    Micrometres,
    /// Arbitrary signal units.
    Arbitrary,
}

impl Unit {
    /// The unit as written in sidecars and help texts.
    pub fn symbol(&self) -> &'static str {
        match self {
            Unit::Dimensionless => "1",
            Unit::Seconds => "s",
            Unit::PerSecond => "1/s",
            Unit::PerMinute => "1/min",
            Unit::Millimolar => "mM",
            Unit::Ml100mlMin => "ml/100ml/min",
            Unit::Ml100gMin => "ml/100g/min",
            Unit::Ml100ml => "ml/100ml",
            Unit::Ml100g => "ml/100g",
            Unit::Mm2PerSecond => "mm^2/s",
            Unit::SecondsPerMm2 => "s/mm^2",
            Unit::Degrees => "deg",
            Unit::Radians => "rad",
            Unit::Micrometres => "um",
            Unit::Arbitrary => "a.u.",
        }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.symbol())
    }
}

/// Seconds per minute.
pub const SECONDS_PER_MINUTE: f64 = 60.0;

/// Converts a rate in 1/s to 1/min.
pub fn per_second_to_per_minute(rate_per_s: f64) -> f64 {
    rate_per_s * SECONDS_PER_MINUTE
}

/// Converts a rate in 1/min to 1/s.
pub fn per_minute_to_per_second(rate_per_min: f64) -> f64 {
    rate_per_min / SECONDS_PER_MINUTE
}

/// Converts seconds to minutes.
pub fn seconds_to_minutes(t_s: f64) -> f64 {
    t_s / SECONDS_PER_MINUTE
}

/// Converts a flow fraction per second (ml/ml/s) to ml/100ml/min.
pub fn per_second_to_ml100ml_min(flow_per_s: f64) -> f64 {
    flow_per_s * SECONDS_PER_MINUTE * 100.0
}

/// Converts degrees to radians.
pub fn degrees_to_radians(deg: f64) -> f64 {
    deg.to_radians()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip_and_match_definitions() {
        // 0.25 /min is 0.25/60 /s by definition of the minute.
        assert!((per_minute_to_per_second(0.25) - 0.25 / 60.0).abs() < 1e-18);
        assert!((per_second_to_per_minute(per_minute_to_per_second(0.37)) - 0.37).abs() < 1e-15);
        assert_eq!(seconds_to_minutes(90.0), 1.5);
        // 0.01 ml/ml/s = 60 ml/100ml/min.
        assert!((per_second_to_ml100ml_min(0.01) - 60.0).abs() < 1e-12);
        assert!((degrees_to_radians(180.0) - std::f64::consts::PI).abs() < 1e-15);
        assert_eq!(Unit::PerMinute.to_string(), "1/min");
    }
}
