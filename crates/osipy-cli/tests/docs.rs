//! Runs the `osipy` commands and parses the TOML blocks of docs/*.md, so the
//! documentation stays true. Commands run in order in one scratch folder.

use std::path::PathBuf;
use std::process::Command;

fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        match &mut cur {
            None if line.trim_start() == format!("```{lang}") => cur = Some(String::new()),
            Some(b) if line.trim_start() == "```" => {
                out.push(std::mem::take(b));
                cur = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn documented_commands_and_configs_work() {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let scratch = tempfile::tempdir().unwrap();
    let mut commands = 0;
    let mut configs = 0;
    // One tutorial per modality of the table (dce.md first: it creates the
    // demo folder the other pages use), with the shared config and report
    // pages after it.
    let mut pages: Vec<String> = osipy_pipeline::MODALITIES
        .iter()
        .map(|m| format!("{}.md", m.id()))
        .collect();
    pages.insert(1, "config.md".into());
    pages.insert(2, "report.md".into());
    pages.insert(3, "performance.md".into());
    pages.push("gpu.md".into());
    pages.push("dicom.md".into());
    pages.push("bids.md".into());
    for page in &pages {
        let text = std::fs::read_to_string(docs.join(page)).unwrap();
        for block in blocks(&text, "toml") {
            osipy_pipeline::Config::from_toml(&block)
                .unwrap_or_else(|e| panic!("{page}: TOML block does not parse: {e}\n{block}"));
            configs += 1;
        }
        for block in blocks(&text, "sh") {
            for line in block.lines().map(str::trim).filter(|l| l.starts_with("osipy ")) {
                let args: Vec<&str> = line.split_whitespace().skip(1).collect();
                let out = Command::new(env!("CARGO_BIN_EXE_osipy"))
                    .args(&args)
                    .current_dir(scratch.path())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{page}: `{line}` failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                commands += 1;
            }
        }
    }
    assert!(
        commands >= 3 && configs >= 2,
        "{commands} commands, {configs} configs"
    );
}
