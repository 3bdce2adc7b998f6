//! Batch mode in the BIDS-App convention (`osipy bids BIDS_DIR OUT_DIR
//! participant`): one config run for each participant (and each of its
//! sessions) of a BIDS dataset into one derivatives dataset. Participants are
//! independent: one failing does not stop the others, and the result lists
//! each. A cluster scheduler can run one participant per job (see
//! `docs/bids.md`).

use crate::{run_analysis, Config, OutputFormat, RunOptions, RunSummary};
use osipy_core::{OsipyError, Result};
use osipy_io::bids::{self, Participant};
use osipy_io::DataValue;
use std::path::Path;

/// The outcome of one participant's run.
#[derive(Debug)]
pub struct ParticipantRun {
    /// Who.
    pub participant: Participant,
    /// The run's summary, or its error in words.
    pub result: std::result::Result<RunSummary, String>,
}

/// The participants to run: `labels` (with or without `sub-`) or every
/// subject of the dataset, each with each of its sessions (only
/// `data.session` when the config sets it).
pub fn participants(bids_dir: &Path, labels: &[String], config: &Config) -> Result<Vec<Participant>> {
    let all = bids::subjects(bids_dir)?;
    let chosen: Vec<String> = if labels.is_empty() {
        all.clone()
    } else {
        labels
            .iter()
            .map(|l| l.trim_start_matches("sub-").to_string())
            .collect()
    };
    if chosen.is_empty() {
        return Err(OsipyError::data(
            format!("BIDS dataset {}", bids_dir.display()),
            "no sub-* folders",
            "at least one subject",
        ));
    }
    let fixed_session = match config.data.get("session") {
        Some(DataValue::Path(s)) => Some(s.clone()),
        _ => None,
    };
    let mut out = Vec::new();
    for subject in chosen {
        bids::check_label("--participant-label", &subject)?;
        if !all.contains(&subject) {
            return Err(OsipyError::UnknownName {
                kind: format!("participant of BIDS dataset {}", bids_dir.display()),
                name: subject,
                valid: all,
            });
        }
        let sessions = bids::sessions(bids_dir, &subject)?;
        match (&fixed_session, sessions.is_empty()) {
            (Some(s), _) => out.push(Participant {
                subject,
                session: Some(s.clone()),
            }),
            (None, true) => out.push(Participant {
                subject,
                session: None,
            }),
            (None, false) => out.extend(sessions.into_iter().map(|s| Participant {
                subject: subject.clone(),
                session: Some(s),
            })),
        }
    }
    Ok(out)
}

/// Runs `config` for each of `participants` of the dataset at `bids_dir`
/// into the derivatives dataset `out_dir` (`opts.data_dir` and
/// `opts.out_dir` are set here), in order; `each` sees every outcome as it
/// comes.
pub fn run_participants(
    bids_dir: &Path,
    out_dir: &Path,
    config: &Config,
    participants: &[Participant],
    opts: &RunOptions,
    mut each: impl FnMut(&ParticipantRun),
) -> Vec<ParticipantRun> {
    let mut runs = Vec::new();
    for p in participants {
        let mut c = config.clone();
        c.data.insert("format".into(), DataValue::Path("bids".into()));
        c.data
            .insert("subject".into(), DataValue::Path(p.subject.clone()));
        match &p.session {
            Some(s) => c.data.insert("session".into(), DataValue::Path(s.clone())),
            None => c.data.remove("session"),
        };
        c.output.format = OutputFormat::Bids;
        let o = RunOptions {
            data_dir: bids_dir.into(),
            out_dir: out_dir.into(),
            ..opts.clone()
        };
        let run = ParticipantRun {
            participant: p.clone(),
            result: run_analysis(&c, &o).map_err(|e| e.to_string()),
        };
        each(&run);
        runs.push(run);
    }
    runs
}
