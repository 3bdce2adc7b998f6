//! Every registered compartment has its page in docs/compartments/ (with
//! its equation and reference), and every page names a registered one.

use std::path::PathBuf;

#[test]
fn every_compartment_has_a_page_and_every_page_a_compartment() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/compartments");
    let names: Vec<&str> = osipy_microstructure::COMPARTMENTS
        .iter()
        .map(|(n, _, _)| *n)
        .collect();
    for name in &names {
        let text = std::fs::read_to_string(dir.join(format!("{name}.md")))
            .unwrap_or_else(|e| panic!("docs/compartments/{name}.md: {e}"));
        for section in ["## Signal", "## Parameters", "## Reference"] {
            assert!(text.contains(section), "{name}.md has no {section}");
        }
        assert!(text.starts_with(&format!("# `{name}`")), "{name}.md: title");
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        let stem = file.trim_end_matches(".md");
        assert!(
            names.contains(&stem),
            "docs/compartments/{file} names no registered compartment"
        );
    }
    // The tutorial links the folder.
    let tutorial = std::fs::read_to_string(dir.join("../microstructure.md")).unwrap();
    assert!(tutorial.contains("(compartments/)"));
}
