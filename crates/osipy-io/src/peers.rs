//! External reference tools the test suites compare against (dcm2niix, the
//! BIDS validator): found on `PATH`. `.ci/run` installs them from PyPI and
//! sets `OSIPY_REQUIRE_PEERS=1`, which makes a missing tool an error instead
//! of a loudly reported skip.

use std::path::PathBuf;

/// The executable `name` on `PATH`; `None` (after a loud message on stderr)
/// when it is missing and `OSIPY_REQUIRE_PEERS` is not `1`.
///
/// # Panics
/// When the tool is missing and `OSIPY_REQUIRE_PEERS=1`: a test that must
/// compare against it cannot pass without it.
pub fn find(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!(
            "{name} is not on PATH: install it with `pip install {package}` (.ci/run does); the comparison against it did NOT run"
        );
        if std::env::var("OSIPY_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
    }
    found
}
