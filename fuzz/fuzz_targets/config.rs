//! The TOML config loader: any text gives a config or an error, never a
//! panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static REGISTRY: OnceLock<osipy_core::Registry> = OnceLock::new();

fuzz_target!(|text: &str| {
    // The built-in registry once, not per input (as `Config::from_toml` would).
    let reg = REGISTRY.get_or_init(|| osipy_pipeline::builtin_registry().expect("registry"));
    let _ = osipy_pipeline::Config::parse(text, reg);
});
