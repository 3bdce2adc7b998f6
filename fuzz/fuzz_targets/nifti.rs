//! The NIfTI reader (header and data, plain and gzipped): any bytes give
//! an image or an error, never a panic, a hang or an unbounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The reader takes a path: write the bytes to a per-process file in
    // memory-backed /dev/shm (else the temporary folder).
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let gz = data.starts_with(&[0x1f, 0x8b]);
    let name = format!("osipy-fuzz-{}.nii{}", std::process::id(), if gz { ".gz" } else { "" });
    let path = dir.join(name);
    if std::fs::write(&path, data).is_ok() {
        let _ = osipy_io::read_nifti(&path);
        let _ = std::fs::remove_file(&path);
    }
});
