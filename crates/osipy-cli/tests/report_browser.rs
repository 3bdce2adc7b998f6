//! End to end: `osipy demo` for every modality, then its `report.html`
//! opened from disk in headless Chromium. The page records whether every
//! image decoded (`data-images`) and what it fetched from anywhere but a
//! `data:` URI (`data-network`); the test reads both from the DOM Chromium
//! dumps, and checks a screenshot by its pixels.
//!
//! Chromium is found as `$OSIPY_CHROMIUM`, else `chromium`,
//! `chromium-browser` or `google-chrome` on the PATH (`.ci/run` installs
//! Debian's `chromium`). Without one the test fails and says how to get
//! it, unless `OSIPY_SKIP_BROWSER_TESTS=1` is set, which it then reports.

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OSIPY_CHROMIUM") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Runs Chromium headless on `page` with the flags that keep it off the
/// network and a fresh profile; `extra` selects what it produces.
fn headless(browser: &Path, profile: &Path, page: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = Command::new("timeout");
    c.arg("120").arg(browser).args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ]);
    c.arg(format!("--user-data-dir={}", profile.display()));
    c.args(extra).arg(format!("file://{}", page.display()));
    c.output().expect("running chromium")
}

/// The value of attribute `name` in `html`.
fn attribute<'a>(html: &'a str, name: &str) -> Option<&'a str> {
    let start = html.find(&format!("{name}=\""))? + name.len() + 2;
    html[start..].split('"').next()
}

#[test]
fn every_modality_report_opens_in_a_browser_with_all_images_and_no_network() {
    let Some(browser) = chromium() else {
        if std::env::var("OSIPY_SKIP_BROWSER_TESTS").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED: no Chromium found and OSIPY_SKIP_BROWSER_TESTS=1");
            return;
        }
        panic!(
            "no Chromium: install Debian's `chromium` (as .ci/run does) or set OSIPY_CHROMIUM; \
             OSIPY_SKIP_BROWSER_TESTS=1 skips this test"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    for m in osipy_pipeline::MODALITIES {
        let id = m.id();
        let out = dir.path().join(id);
        let r = Command::new(env!("CARGO_BIN_EXE_osipy"))
            .args(["demo", id, "-o", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(r.status.success(), "{id}: {}", String::from_utf8_lossy(&r.stderr));
        let page = out.join("maps/report.html");
        let html = std::fs::read_to_string(&page).unwrap();
        let images = html.matches("<img ").count();
        assert!(images >= 5, "{id}: {images} images");

        let profile = dir.path().join(format!("profile-{id}"));
        let dom = headless(
            &browser,
            &profile,
            &page,
            &["--virtual-time-budget=10000", "--dump-dom"],
        );
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert_eq!(
            attribute(&dom, "data-images"),
            Some(format!("{images}/{images}").as_str()),
            "{id}: images that did not load (or the page script did not run)"
        );
        assert_eq!(
            attribute(&dom, "data-network"),
            Some("0"),
            "{id}: the page fetched something"
        );

        let shot = dir.path().join(format!("{id}.png"));
        let profile = dir.path().join(format!("profile-{id}-shot"));
        let arg = format!("--screenshot={}", shot.display());
        headless(&browser, &profile, &page, &["--window-size=1400,2400", &arg]);
        let bytes = std::fs::read(&shot).unwrap_or_else(|e| panic!("{id}: no screenshot: {e}"));
        let mut dec = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; dec.output_buffer_size().unwrap()];
        let info = dec.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (1400, 2400), "{id}");
        // A rendered page of maps: much of it coloured, not a blank or error page.
        let channels = info.color_type.samples();
        let coloured = buf[..info.buffer_size()]
            .chunks(channels)
            .filter(|p| {
                let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
                (r - g).abs().max((g - b).abs()).max((r - b).abs()) > 40
            })
            .count();
        let share = coloured as f64 / (info.width * info.height) as f64;
        assert!(
            share > 0.05,
            "{id}: only {:.1} % of the screenshot is coloured",
            100.0 * share
        );
    }
}
