//! The DICOM folder reader (header scan, series assembly, pixel decoding):
//! any bytes after a Part 10 preamble give a series or an error, never a
//! panic, a hang or an unbounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("osipy-fuzz-dicom-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    bytes.extend_from_slice(data);
    if std::fs::write(dir.join("f.dcm"), &bytes).is_ok() {
        if let Ok(series) = osipy_io::dicom::scan(&dir, None) {
            let _ = series.read();
        }
    }
});
