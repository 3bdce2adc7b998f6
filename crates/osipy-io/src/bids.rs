//! BIDS datasets in, BIDS-derivatives datasets out.
//!
//! * **Input** (`data.format = "bids"`, `data.subject`, optional
//!   `data.session`): the data folder is the dataset root. A role not named in
//!   `[data]` is discovered by the modality's file-name rule among the files
//!   of `sub-<label>[/ses-<label>]/<datatype>/` whose names begin with
//!   `sub-<label>_[ses-<label>_]` (e.g. `perf/sub-01_asl.nii.gz`,
//!   `perf/sub-01_m0scan.nii.gz`, `perf/sub-01_aslcontext.tsv`,
//!   `dwi/sub-01_dwi.nii.gz` with `dwi/sub-01_dwi.bval`,
//!   `anat/sub-01_T1map.nii.gz`). DCE and DSC series have no BIDS suffix yet
//!   (BEP009): name them `perf/sub-<label>_dce.nii.gz` and `..._dsc.nii.gz`.
//! * **Sidecars** follow the inheritance principle: every `.json` from the
//!   dataset root down to the image's folder whose suffix is the image's and
//!   whose entities are a subset of the image's applies, deeper files
//!   overriding shallower ones key by key.
//! * **Output** (`output.format = "bids"`): a derivatives dataset
//!   (`dataset_description.json` with `GeneratedBy`, `README`, `.bidsignore`),
//!   each run in `sub-<label>[/ses-<label>]/<datatype>/`, its maps named
//!   `sub-<label>[_ses-<label>]_desc-<Map>_<modality>.nii.gz` with sidecars
//!   giving `Units`, `Description`, `Sources` (BIDS URIs) and the model and
//!   settings.

use crate::inputs::read_text_file;
use osipy_core::{OsipyError, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The subject (and session) of a run on a BIDS dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// Label without `sub-`.
    pub subject: String,
    /// Label without `ses-`.
    pub session: Option<String>,
}

impl Participant {
    /// `sub-01` or `sub-01_ses-1`: the prefix of this participant's files.
    pub fn prefix(&self) -> String {
        match &self.session {
            Some(s) => format!("sub-{}_ses-{s}", self.subject),
            None => format!("sub-{}", self.subject),
        }
    }

    /// `sub-01` or `sub-01/ses-1`, relative to the dataset root.
    pub fn dir(&self) -> PathBuf {
        let d = PathBuf::from(format!("sub-{}", self.subject));
        match &self.session {
            Some(s) => d.join(format!("ses-{s}")),
            None => d,
        }
    }

    /// In words, for messages (`sub-01`, `sub-01 ses-1`).
    pub fn label(&self) -> String {
        self.prefix().replace('_', " ")
    }
}

/// Raw-data suffixes BIDS defines for the datatypes osipy reads: a map
/// named with one of these is valid BIDS (a derivative of that data, with a
/// `desc` entity); others are listed in the derivatives' `.bidsignore`.
pub const RAW_SUFFIXES: [&str; 3] = ["asl", "m0scan", "dwi"];

/// A BIDS label: letters and digits only.
pub fn check_label(key: &str, value: &str) -> Result<()> {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(OsipyError::data(
            key,
            format!("\"{value}\""),
            "a BIDS label: letters and digits only, without the sub-/ses- prefix (e.g. \"01\")",
        ));
    }
    Ok(())
}

/// Subject labels of the dataset at `root` (its `sub-*` folders), sorted.
pub fn subjects(root: &Path) -> Result<Vec<String>> {
    labels(root, "sub-")
}

/// Session labels of `subject` (its `ses-*` folders), sorted; empty when
/// the subject has no sessions.
pub fn sessions(root: &Path, subject: &str) -> Result<Vec<String>> {
    labels(&root.join(format!("sub-{subject}")), "ses-")
}

fn labels(dir: &Path, prefix: &str) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| OsipyError::io(dir, format!("cannot list the BIDS folder: {e}")))?;
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix(prefix).map(str::to_string))
        .collect();
    out.sort();
    Ok(out)
}

/// The folders a participant's inputs are searched in (its datatype
/// folders), checking that the subject and session exist.
pub fn search_dirs(root: &Path, p: &Participant) -> Result<Vec<PathBuf>> {
    if !root.join("dataset_description.json").is_file() {
        return Err(OsipyError::data(
            format!("BIDS dataset {}", root.display()),
            "no dataset_description.json",
            "the root folder of a BIDS dataset (data.format = \"bids\")",
        ));
    }
    let subs = subjects(root)?;
    if !subs.contains(&p.subject) {
        return Err(OsipyError::UnknownName {
            kind: format!("subject (data.subject) of BIDS dataset {}", root.display()),
            name: p.subject.clone(),
            valid: subs,
        });
    }
    let sess = sessions(root, &p.subject)?;
    match (&p.session, sess.is_empty()) {
        (None, false) => {
            return Err(OsipyError::MissingParameter {
                name: "data.session".into(),
                needed_for: format!("sub-{} of {}", p.subject, root.display()),
                hint: format!("it has sessions {}", sess.join(", ")),
            })
        }
        (Some(s), _) if !sess.contains(s) => {
            return Err(OsipyError::UnknownName {
                kind: format!("session (data.session) of sub-{}", p.subject),
                name: s.clone(),
                valid: sess,
            })
        }
        _ => {}
    }
    let dir = root.join(p.dir());
    let entries = std::fs::read_dir(&dir).map_err(|e| OsipyError::io(&dir, format!("cannot list: {e}")))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("ses-"))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// A BIDS file name split up: `sub-01_ses-1_asl.nii.gz` has entities
/// `[(sub, 01), (ses, 1)]`, suffix `asl`, extension `.nii.gz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidsName {
    /// Key-value entities, in order.
    pub entities: Vec<(String, String)>,
    /// The suffix.
    pub suffix: String,
    /// The extension, with its dot(s).
    pub ext: String,
}

/// Splits a BIDS file name; `None` when it is not one.
pub fn parse_name(name: &str) -> Option<BidsName> {
    let dot = name.find('.')?;
    let (stem, ext) = name.split_at(dot);
    let mut parts: Vec<&str> = stem.split('_').collect();
    let suffix = parts.pop()?.to_string();
    let mut entities = Vec::new();
    for p in parts {
        let (k, v) = p.split_once('-')?;
        entities.push((k.to_string(), v.to_string()));
    }
    Some(BidsName {
        entities,
        suffix,
        ext: ext.to_string(),
    })
}

/// The sidecars of `file` by the inheritance principle, shallowest first.
pub fn sidecar_chain(root: &Path, file: &Path) -> Vec<PathBuf> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(BidsName { entities, suffix, .. }) = parse_name(&name) else {
        return Vec::new();
    };
    let mut levels = vec![root.to_path_buf()];
    if let Ok(rel) = file.parent().unwrap_or(root).strip_prefix(root) {
        let mut d = root.to_path_buf();
        for c in rel.components() {
            d = d.join(c);
            levels.push(d.clone());
        }
    }
    let mut chain = Vec::new();
    for dir in levels {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut here: Vec<(usize, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                let b = parse_name(&n)?;
                let applies = b.ext == ".json"
                    && b.suffix == suffix
                    && b.entities.iter().all(|kv| entities.contains(kv));
                applies.then(|| (b.entities.len(), e.path()))
            })
            .collect();
        // Within a folder, fewer entities first (more general).
        here.sort();
        chain.extend(here.into_iter().map(|(_, p)| p));
    }
    chain
}

/// The merged sidecar of `file` (see [`sidecar_chain`]), with the files it
/// came from; `None` when no sidecar applies.
pub fn sidecar(root: &Path, file: &Path) -> Result<Option<(PathBuf, Value)>> {
    let chain = sidecar_chain(root, file);
    let Some(last) = chain.last().cloned() else {
        return Ok(None);
    };
    let mut merged = Map::new();
    for path in &chain {
        let text = read_text_file(path)?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| OsipyError::io(path, format!("not valid JSON: {e}")))?;
        let Value::Object(m) = v else {
            return Err(OsipyError::io(path, "a sidecar must be a JSON object"));
        };
        merged.extend(m);
    }
    Ok(Some((last, Value::Object(merged))))
}

/// The BIDS URI of `file` in the dataset at `root` (`bids:raw:sub-01/...`),
/// or its path when it lies outside.
pub fn uri(root: &Path, file: &Path) -> String {
    match file.strip_prefix(root) {
        Ok(rel) => format!("bids:raw:{}", rel.display()),
        Err(_) => file.display().to_string(),
    }
}

/// A derivative map's name: `sub-01[_ses-1]_desc-<Map>_<suffix><ext>`; the
/// map name loses what a BIDS label may not hold (`Ktrans_se` becomes
/// `KtransSE`, `r_squared` becomes `rSquared`).
pub fn derivative_name(p: &Participant, map: &str, suffix: &str, ext: &str) -> String {
    format!("{}_desc-{}_{suffix}{ext}", p.prefix(), desc_label(map))
}

fn desc_label(map: &str) -> String {
    // camelCase of the `_`-separated parts (the first kept as it is); later
    // parts of one or two letters (`se`) upper-cased.
    let mut out = String::new();
    for (i, part) in map.split('_').enumerate() {
        let part: String = part.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        if i == 0 {
            out.push_str(&part);
        } else if part.len() <= 2 {
            out.push_str(&part.to_uppercase());
        } else {
            let mut c = part.chars();
            out.extend(c.next().map(|f| f.to_ascii_uppercase()));
            out.extend(c);
        }
    }
    out
}

/// Writes the dataset-level files of a derivatives dataset at `root`
/// (`dataset_description.json`, `README`, `.bidsignore`) when absent, so
/// participants run in parallel (one job each) write them once and alike.
/// `source` is the raw dataset, `suffixes` the map suffixes BIDS does not
/// define yet (listed in `.bidsignore`).
pub fn write_dataset_files(root: &Path, source: Option<&Path>, suffixes: &[&str]) -> Result<()> {
    std::fs::create_dir_all(root).map_err(|e| OsipyError::io(root, format!("cannot create: {e}")))?;
    let mut description = json!({
        "Name": "osipy perfusion and diffusion maps",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "osipy",
            "Version": env!("CARGO_PKG_VERSION"),
            "Description": "Quantitative perfusion and diffusion MRI maps (OSIPI conventions)"
        }],
        "Authors": ["osipy (automated)", "the user who ran it"],
    });
    if let Some(src) = source {
        description["SourceDatasets"] = json!([{ "URL": format!("file://{}", src.display()) }]);
        description["DatasetLinks"] = json!({ "raw": format!("file://{}", src.display()) });
    }
    let mut ignore = String::from(
        "# Written by osipy. BIDS defines no names yet for these parameter maps\n\
         # (BEP009 perfusion, BEP016 diffusion derivatives), nor for osipy's run\n\
         # record and report; the validator skips what is listed here.\n",
    );
    for s in suffixes {
        ignore.push_str(&format!("*_{s}.nii\n*_{s}.nii.gz\n*_{s}.json\n"));
    }
    ignore.push_str("osipy_run.json\nreport.html\nfigures\n");
    let readme = "Parameter maps computed by osipy from the raw BIDS dataset named in\n\
                  dataset_description.json (SourceDatasets). Each run's folder holds its\n\
                  maps (desc-<Map>), standard-error maps (desc-<Map>SE), R^2 (desc-rSquared),\n\
                  the quality mask (desc-qualityMask), osipy_run.json and report.html.\n";
    let files: [(&str, String); 3] = [
        (
            "dataset_description.json",
            serde_json::to_string_pretty(&description).map_err(|e| OsipyError::Validation(e.to_string()))?,
        ),
        ("README", readme.to_string()),
        (".bidsignore", ignore),
    ];
    for (name, text) in files {
        let path = root.join(name);
        if path.exists() {
            continue;
        }
        crate::atomic_write(&path, |tmp| std::fs::write(tmp, &text).map_err(|e| e.to_string()))?;
    }
    Ok(())
}

/// Renames a finished run folder's files to BIDS-derivative names and adds
/// the BIDS keys to their sidecars: each `<Map>.nii[.gz]` with its
/// `<Map>.json` becomes `sub-.._desc-<Map>_<suffix>.nii[.gz]`; images without
/// a sidecar (R^2, quality mask, `_se` maps) get one naming what they hold.
/// Returns the old-to-new name pairs.
pub fn rename_run(
    dir: &Path,
    p: &Participant,
    suffix: &str,
    sources: &[String],
) -> Result<BTreeMap<String, String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| OsipyError::io(dir, format!("cannot list: {e}")))?;
    let mut images: Vec<(String, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| {
            let ext = if n.ends_with(".nii.gz") {
                ".nii.gz"
            } else if n.ends_with(".nii") {
                ".nii"
            } else {
                return None;
            };
            Some((n.trim_end_matches(ext).to_string(), ext.to_string()))
        })
        .collect();
    images.sort();
    // Units of each map, for its standard-error map.
    let mut units: BTreeMap<String, Value> = BTreeMap::new();
    for (stem, _) in &images {
        let json = dir.join(format!("{stem}.json"));
        if let Ok(Value::Object(m)) =
            serde_json::from_str::<Value>(&read_text_file(&json).unwrap_or_default())
        {
            if let Some(u) = m.get("Units") {
                units.insert(stem.clone(), u.clone());
            }
        }
    }
    let codes: Vec<String> = osipy_core::QualityCode::ALL
        .iter()
        .map(|q| format!("{} {}", q.code(), q.name()))
        .collect();
    let mut renamed = BTreeMap::new();
    for (stem, ext) in images {
        let new_stem = derivative_name(p, &stem, suffix, "");
        let old_json = dir.join(format!("{stem}.json"));
        let mut sidecar: Map<String, Value> = if old_json.is_file() {
            match serde_json::from_str(&read_text_file(&old_json)?) {
                Ok(Value::Object(m)) => m,
                _ => return Err(OsipyError::io(&old_json, "not a JSON object")),
            }
        } else {
            Map::new()
        };
        let description = match stem.as_str() {
            "quality_mask" => format!("quality code of each voxel's fit: {}", codes.join(", ")),
            "r_squared" => "coefficient of determination of each voxel's fit".to_string(),
            s if s.ends_with("_se") => format!("standard error of {}", s.trim_end_matches("_se")),
            s => sidecar
                .get("Description")
                .and_then(|d| d.as_str())
                .map_or_else(|| format!("{s} map"), str::to_string),
        };
        sidecar.insert("Description".into(), json!(description));
        let unit = match stem.strip_suffix("_se") {
            Some(parent) => units.get(parent).cloned().unwrap_or(json!("")),
            None if stem == "quality_mask" => json!("arbitrary"),
            None => json!(""),
        };
        sidecar.entry("Units").or_insert(unit);
        sidecar.insert("Sources".into(), json!(sources));
        sidecar.insert("SkullStripped".into(), json!(false));
        let new_json = dir.join(format!("{new_stem}.json"));
        let text = serde_json::to_string_pretty(&Value::Object(sidecar))
            .map_err(|e| OsipyError::Validation(e.to_string()))?;
        crate::atomic_write(&new_json, |tmp| {
            std::fs::write(tmp, &text).map_err(|e| e.to_string())
        })?;
        if old_json.is_file() {
            std::fs::remove_file(&old_json)
                .map_err(|e| OsipyError::io(&old_json, format!("cannot remove: {e}")))?;
        }
        let (from, to) = (
            dir.join(format!("{stem}{ext}")),
            dir.join(format!("{new_stem}{ext}")),
        );
        std::fs::rename(&from, &to).map_err(|e| OsipyError::io(&from, format!("cannot rename: {e}")))?;
        renamed.insert(format!("{stem}{ext}"), format!("{new_stem}{ext}"));
        renamed.insert(format!("{stem}.json"), format!("{new_stem}.json"));
    }
    Ok(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let b = parse_name("sub-01_ses-1_acq-hi_asl.nii.gz").unwrap();
        assert_eq!(b.entities.len(), 3);
        assert_eq!((b.suffix.as_str(), b.ext.as_str()), ("asl", ".nii.gz"));
        assert!(parse_name("README").is_none());
        let p = Participant {
            subject: "01".into(),
            session: Some("2".into()),
        };
        assert_eq!(
            derivative_name(&p, "Ktrans", "dce", ".nii.gz"),
            "sub-01_ses-2_desc-Ktrans_dce.nii.gz"
        );
        assert_eq!(
            derivative_name(&p, "Ktrans_se", "dce", ""),
            "sub-01_ses-2_desc-KtransSE_dce"
        );
        assert_eq!(
            derivative_name(&p, "r_squared", "dce", ""),
            "sub-01_ses-2_desc-rSquared_dce"
        );
        assert_eq!(
            derivative_name(&p, "quality_mask", "dce", ""),
            "sub-01_ses-2_desc-qualityMask_dce"
        );
        assert!(check_label("data.subject", "sub-01").is_err());
        assert!(check_label("data.subject", "01").is_ok());
    }
}
