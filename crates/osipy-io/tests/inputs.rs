//! Input roles: resolution, discovery, readers and their errors.

use osipy_io::{is_nifti, read_value_list, DataValue, InputKind, InputSpec, Inputs};
use std::collections::BTreeMap;

const SPECS: &[InputSpec] = &[
    InputSpec {
        role: "dwi",
        description: "4D series",
        example: "\"dwi.nii.gz\"",
        kind: InputKind::File,
        discover: Some(|n| is_nifti(n) && n.contains("dwi")),
    },
    InputSpec {
        role: "b_values",
        description: "inline b-values",
        example: "[0, 1000]",
        kind: InputKind::Values,
        discover: None,
    },
    InputSpec {
        role: "b_values_file",
        description: "a .bval",
        example: "\"dwi.bval\"",
        kind: InputKind::File,
        discover: Some(|n| n.ends_with(".bval")),
    },
];

fn data(pairs: &[(&str, DataValue)]) -> BTreeMap<String, DataValue> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[test]
fn given_paths_win_and_the_rest_is_discovered() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["dwi.nii.gz", "my_mask.nii", "dwi.bval", "notes.txt"] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    let inputs = Inputs::resolve(dir.path(), SPECS, &data(&[])).unwrap();
    assert!(inputs.path("dwi").unwrap().ends_with("dwi.nii.gz"));
    assert!(
        inputs.path("mask").unwrap().ends_with("my_mask.nii"),
        "mask is shared by every modality"
    );
    assert!(inputs.path("b_values_file").unwrap().ends_with("dwi.bval"));
    assert!(inputs.values("b_values").is_none());
    let given = data(&[
        ("dwi", DataValue::Path("/abs/other.nii.gz".into())),
        ("b_values", DataValue::Values(vec![0.0, 500.0])),
    ]);
    let inputs = Inputs::resolve(dir.path(), SPECS, &given).unwrap();
    assert_eq!(
        inputs.path("dwi").unwrap(),
        std::path::Path::new("/abs/other.nii.gz")
    );
    assert_eq!(inputs.values("b_values").unwrap(), [0.0, 500.0]);
    let record = inputs.record();
    assert_eq!(record["b_values"], "data.b_values (2 values)");
    // Required but absent: the error names the key, what needs it and where it looked.
    let e = inputs
        .require("nope", "the test", "give one")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data.nope") && e.contains("the test") && e.contains("searched"),
        "{e}"
    );
}

#[test]
fn wrong_kinds_unknown_roles_and_ambiguity_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = Inputs::resolve(
        dir.path(),
        SPECS,
        &data(&[("b_values", DataValue::Path("b.txt".into()))]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("data.b_values must be a list of numbers"), "{e}");
    let e = Inputs::resolve(dir.path(), SPECS, &data(&[("dwi", DataValue::Values(vec![1.0]))]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.dwi must be a file path"), "{e}");
    let e = Inputs::resolve(
        dir.path(),
        SPECS,
        &data(&[("dynamic", DataValue::Path("x".into()))]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("\"dynamic\"") && e.contains("dwi, b_values, b_values_file, mask"),
        "{e}"
    );
    for f in ["a_dwi.nii.gz", "b_dwi.nii.gz"] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    let e = Inputs::resolve(dir.path(), SPECS, &data(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a_dwi.nii.gz, ") && e.contains("b_dwi.nii.gz") && e.contains("data.dwi"),
        "{e}"
    );
}

#[test]
fn value_lists_read_fsl_lines_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let one_line = dir.path().join("dwi.bval");
    std::fs::write(&one_line, "0 10 20\t800\n").unwrap();
    assert_eq!(read_value_list(&one_line).unwrap(), [0.0, 10.0, 20.0, 800.0]);
    let column = dir.path().join("b.txt");
    std::fs::write(&column, "b\n0\n500\n1000\n").unwrap();
    assert_eq!(read_value_list(&column).unwrap(), [0.0, 500.0, 1000.0]);
    let bad = dir.path().join("bad.bval");
    std::fs::write(&bad, "0 ten 20\n").unwrap();
    let e = read_value_list(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.bval") && e.contains("\"ten\""), "{e}");
}

#[test]
fn devices_fifos_and_huge_files_are_refused_without_reading_them() {
    use osipy_io::{read_3d, read_numbers, read_text_file};
    // /dev/zero never ends: refused before any read, in words.
    let zero = std::path::Path::new("/dev/zero");
    if zero.exists() {
        for e in [
            read_numbers(zero, 2).unwrap_err().to_string(),
            read_value_list(zero).unwrap_err().to_string(),
            read_text_file(zero).unwrap_err().to_string(),
            read_3d(zero).unwrap_err().to_string(),
        ] {
            assert!(e.contains("/dev/zero") && e.contains("not a regular file"), "{e}");
        }
    }
    // A FIFO would block the reader forever: refused without opening it.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("times.txt");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo is needed for this test");
    let e = read_numbers(&fifo, 1).unwrap_err().to_string();
    assert!(e.contains("times.txt") && e.contains("FIFO"), "{e}");
    // A folder is named as a folder.
    let e = read_text_file(dir.path()).unwrap_err().to_string();
    assert!(e.contains("is a folder"), "{e}");
}

/// Inputs the fuzzers found (`fuzz/`), kept as regression tests: each is an
/// error in words, not an abort.
#[test]
fn fuzz_regressions_are_errors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    // A gzipped header declaring dimensions whose data could not fit: the
    // third-party reader allocated it (allocation-size-too-big, an abort).
    let e = osipy_io::read_nifti(dir.join("nifti-huge-dims.nii.gz"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("header declares") && e.contains("damaged or truncated"),
        "{e}"
    );
    // DICOM files whose damage made dicom-parser read an element of up to
    // 4 GiB (it allocates and zero-fills the declared length first: 4.2 GB
    // and 50 s for a 0.7 kB file): a length beyond the file's end, an
    // undefined value representation (`AV`), an SV of undefined length, a
    // big-endian data set declaring 3.7 GB, an FD of 34 bytes, a delimiter
    // with a value, an item outside a sequence, an item directly in an item,
    // a meta group length that ends the meta group early (1.2 GB).
    // Each is now refused before dicom-parser reads it.
    for name in [
        "dicom-huge-length.dcm",
        "dicom-unknown-vr.dcm",
        "dicom-undefined-length.dcm",
        "dicom-big-endian-length.dcm",
        "dicom-partial-value.dcm",
        "dicom-delimiter-length.dcm",
        "dicom-stray-item.dcm",
        "dicom-item-in-item.dcm",
        "dicom-meta-length.dcm",
    ] {
        let folder = tempfile::tempdir().unwrap();
        std::fs::copy(dir.join(name), folder.path().join("f.dcm")).unwrap();
        let e = osipy_io::dicom::scan(folder.path(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.dcm") && e.contains("not a readable DICOM file"),
            "{name}: {e}"
        );
    }
}
