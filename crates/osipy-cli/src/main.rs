//! # osipy-cli
//!
//! The `osipy` command-line tool: `run`, `bids`, `report`, `dump-defaults`,
//! `validate`, `list`, `demo`. Exit code 0 on success; on any error, non-zero with a one-line
//! cause on stderr.
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | |

mod demo;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use osipy_pipeline::config::LogLevel;
use osipy_pipeline::modality::{ids, modality};
use osipy_pipeline::{builtin_registry, config::dump_defaults, run_analysis, Config, Progress, RunOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Quantitative perfusion MRI (DCE, DSC, ASL, IVIM) following OSIPI conventions.
#[derive(Debug, Parser)]
#[command(name = "osipy", version, about, long_about = None)]
struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the analysis a config describes on the data in DATA_PATH.
    Run {
        /// TOML configuration (see `osipy dump-defaults`).
        config: PathBuf,
        /// Folder with the input files (paths in [data] are relative to it).
        data_path: PathBuf,
        /// Output folder [default: DATA_PATH/osipy_output].
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Run a config on every participant of a BIDS dataset (BIDS-App batch mode)
    ///
    /// Writes a BIDS-derivatives dataset in OUTPUT_DIR. Participants are
    /// independent; the exit code is 0 only when all succeeded.
    Bids {
        /// Root of the BIDS dataset.
        bids_dir: PathBuf,
        /// Root of the derivatives dataset to write.
        output_dir: PathBuf,
        /// Analysis level: `participant` (osipy has no group level).
        analysis_level: String,
        /// Participants to run (with or without sub-) [default: all].
        #[arg(long, num_args = 1..)]
        participant_label: Vec<String>,
        /// TOML configuration (its [data] roles are found per participant).
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Redraw report.html and figures/ of a finished output folder.
    Report {
        /// The output folder of an `osipy run` (it holds osipy_run.json).
        out_dir: PathBuf,
    },
    /// Print the commented default configuration of a modality.
    DumpDefaults {
        /// The modality (see `osipy list modalities`).
        modality: String,
    },
    /// Check a configuration without running it.
    Validate {
        /// TOML configuration.
        config: PathBuf,
    },
    /// List what a config can select (modalities, registered methods, closed
    /// choices) with its config key; all or one kind (e.g. `dce_models`).
    List {
        /// `modalities`, `choices` or a registry kind.
        kind: Option<String>,
    },
    /// Generate a phantom, run the real pipeline on it from files, and print
    /// recovered against true values.
    Demo {
        /// Modality of the demo.
        #[arg(default_value = "dce")]
        modality: String,
        /// Output folder for the phantom, its config and the maps.
        #[arg(short, long, default_value = "osipy-demo")]
        output: PathBuf,
        /// Replace the data and maps of an earlier demo in that folder.
        #[arg(long)]
        overwrite: bool,
        /// Skip report.html and figures/.
        #[arg(long)]
        no_report: bool,
        /// Write the phantom's series as DICOM folders (classic MR files)
        /// instead of NIfTI, and analyse those.
        #[arg(long, conflicts_with = "bids")]
        dicom: bool,
        /// Write the phantom as a BIDS dataset (subject 01) and the maps as a
        /// BIDS-derivatives dataset.
        #[arg(long)]
        bids: bool,
    },
    /// Monte Carlo diffusion signal of water in a simple substrate under a
    /// PGSE sequence, per volume of a .bval/.bvec scheme (tab-separated:
    /// volume, b, gx, gy, gz, signal, std_error).
    Simulate(SimulateArgs),
}

/// The Monte Carlo simulator's options (`osipy simulate`).
#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// free, cylinder (axis along z), sphere, or planes (normal along z).
    substrate: String,
    /// b-values (s/mm^2), FSL .bval.
    #[arg(long)]
    bval: PathBuf,
    /// Gradient directions, FSL .bvec.
    #[arg(long)]
    bvec: PathBuf,
    /// Gradient pulse duration (s).
    #[arg(long)]
    delta: f64,
    /// Gradient pulse separation (s).
    #[arg(long = "Delta")]
    big_delta: f64,
    /// Radius (cylinder, sphere) or spacing (planes), um.
    #[arg(long)]
    size: Option<f64>,
    /// Free diffusivity (mm^2/s).
    #[arg(long, default_value_t = 2.0e-3)]
    diffusivity: f64,
    /// Number of random walkers (the standard error falls as 1 / sqrt).
    #[arg(long, default_value_t = 10_000)]
    walkers: usize,
    /// Time step (s).
    #[arg(long, default_value_t = 2.0e-5)]
    dt: f64,
    /// Random seed (same seed, same signal, any thread count).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Write the table here instead of to standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// How a run goes, for `run` and each participant of `bids`.
#[derive(Debug, clap::Args)]
struct RunFlags {
    /// Worker threads [default: backend.threads, OSIPY_NUM_THREADS or all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device: cpu, cuda, cuda:N or auto [default: backend.device]. cuda needs a build with `--features cuda`.
    #[arg(long, value_parser = parse_device)]
    device: Option<osipy_backend::DeviceChoice>,
    /// Replace an existing, non-empty output folder (as a whole, once the run has succeeded).
    #[arg(long)]
    overwrite: bool,
    /// Skip report.html and figures/ (overrides output.report).
    #[arg(long)]
    no_report: bool,
}

fn parse_device(s: &str) -> std::result::Result<osipy_backend::DeviceChoice, String> {
    osipy_backend::DeviceChoice::parse(s, "--device").map_err(|e| e.to_string())
}

fn init_logging(verbose: u8, quiet: bool, config_level: Option<LogLevel>) {
    let level = if quiet {
        tracing::Level::ERROR
    } else {
        match verbose {
            0 => match config_level {
                Some(LogLevel::Error) => tracing::Level::ERROR,
                Some(LogLevel::Warn) => tracing::Level::WARN,
                Some(LogLevel::Debug) => tracing::Level::DEBUG,
                Some(LogLevel::Trace) => tracing::Level::TRACE,
                _ => tracing::Level::INFO,
            },
            1 => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the pipeline with a progress bar on the fit (hidden when stderr is
/// not a terminal).
pub(crate) fn run_with_progress(
    config: &Config,
    data_path: &Path,
    out: &Path,
    flags: &RunFlags,
    quiet: bool,
) -> Result<osipy_pipeline::RunSummary> {
    let progress = Progress::new();
    // The bar redraws every 100 ms until the run ends: the end wakes it at
    // once (a sleep made every run wait up to 100 ms more).
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let bar_thread = {
        let progress = progress.clone();
        std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                if quiet {
                    indicatif::ProgressDrawTarget::hidden()
                } else {
                    indicatif::ProgressDrawTarget::stderr()
                },
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} voxels ({eta})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message("fitting");
            loop {
                let (done, total) = progress.get();
                if total > 0 {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                }
                match stopped.recv_timeout(std::time::Duration::from_millis(100)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            bar.finish_and_clear();
        })
    };
    let opts = RunOptions {
        data_dir: data_path.into(),
        out_dir: out.into(),
        overwrite: flags.overwrite,
        threads: flags.threads,
        device: flags.device,
        progress: Some(progress),
        no_report: flags.no_report,
    };
    let result = run_analysis(config, &opts);
    drop(stop);
    let _ = bar_thread.join();
    Ok(result?)
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Simulate(a) => {
            init_logging(cli.verbose, cli.quiet, None);
            let opts = osipy_pipeline::simulate::SimulateOptions {
                substrate: a.substrate,
                size: a.size,
                delta: a.delta,
                big_delta: a.big_delta,
                diffusivity: a.diffusivity,
                walkers: a.walkers,
                dt: a.dt,
                seed: a.seed,
                threads: a.threads,
            };
            let table = osipy_pipeline::simulate::simulate_table(&a.bval, &a.bvec, &opts)?;
            match a.output {
                Some(p) => std::fs::write(&p, table)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?,
                None => print!("{table}"),
            }
        }
        Command::Run {
            config,
            data_path,
            output,
            flags,
        } => {
            let cfg = Config::from_file(&config)?;
            init_logging(cli.verbose, cli.quiet, Some(cfg.logging.level));
            if !data_path.is_dir() {
                anyhow::bail!("data path {} is not a folder", data_path.display());
            }
            let out = output.unwrap_or_else(|| data_path.join("osipy_output"));
            let start = std::time::Instant::now();
            let summary = run_with_progress(&cfg, &data_path, &out, &flags, cli.quiet)?;
            tracing::info!(seconds = start.elapsed().as_secs_f64(), output = %out.display(), quality = ?summary.quality_counts, "done");
            if !cli.quiet {
                println!("wrote {} files to {}", summary.outputs.len(), out.display());
            }
        }
        Command::Bids {
            bids_dir,
            output_dir,
            analysis_level,
            participant_label,
            config,
            flags,
        } => {
            if analysis_level != "participant" {
                anyhow::bail!("analysis level {analysis_level:?}: osipy has only the \"participant\" level");
            }
            let cfg = Config::from_file(&config)?;
            init_logging(cli.verbose, cli.quiet, Some(cfg.logging.level));
            let participants = osipy_pipeline::bids_app::participants(&bids_dir, &participant_label, &cfg)?;
            let opts = RunOptions {
                overwrite: flags.overwrite,
                threads: flags.threads,
                device: flags.device,
                no_report: flags.no_report,
                ..Default::default()
            };
            let runs = osipy_pipeline::bids_app::run_participants(
                &bids_dir,
                &output_dir,
                &cfg,
                &participants,
                &opts,
                |r| match &r.result {
                    Ok(s) => {
                        tracing::info!(participant = %r.participant.label(), files = s.outputs.len(), "done")
                    }
                    Err(e) => tracing::error!(participant = %r.participant.label(), "failed: {e}"),
                },
            );
            let failed: Vec<String> = runs
                .iter()
                .filter_map(|r| {
                    r.result
                        .as_ref()
                        .err()
                        .map(|e| format!("  {}: {e}", r.participant.label()))
                })
                .collect();
            println!(
                "{} of {} participant runs succeeded into {}",
                runs.len() - failed.len(),
                runs.len(),
                output_dir.display()
            );
            for r in &runs {
                println!(
                    "  {:<16} {}",
                    r.participant.label(),
                    if r.result.is_ok() { "ok" } else { "FAILED" }
                );
            }
            if !failed.is_empty() {
                anyhow::bail!(
                    "{} participant run(s) failed:\n{}",
                    failed.len(),
                    failed.join("\n")
                );
            }
        }
        Command::Report { out_dir } => {
            init_logging(cli.verbose, cli.quiet, None);
            let written = osipy_pipeline::write_report(&out_dir)?;
            if !cli.quiet {
                println!(
                    "wrote {} ({} figures)",
                    out_dir.join("report.html").display(),
                    written.len().saturating_sub(1)
                );
            }
        }
        Command::DumpDefaults { modality } => {
            print!("{}", dump_defaults(&modality)?);
        }
        Command::Validate { config } => {
            let cfg = Config::from_file(&config)?;
            let what = cfg.modality_def()?.describe(&cfg.pipeline)?;
            println!(
                "{}: valid {} configuration ({what})",
                config.display(),
                cfg.modality
            );
        }
        Command::List { kind } => list(kind.as_deref())?,
        Command::Demo {
            modality: id,
            output,
            overwrite,
            no_report,
            dicom,
            bids,
        } => {
            let m = modality(&id).map_err(|_| {
                anyhow::anyhow!(
                    "no demo for {id:?} in this build; available: {}",
                    ids().join(", ")
                )
            })?;
            init_logging(cli.verbose, true, None);
            let layout = match (dicom, bids) {
                (true, _) => demo::Layout::Dicom,
                (_, true) => demo::Layout::Bids,
                _ => demo::Layout::Nifti,
            };
            demo::run(m, &output, overwrite, no_report, layout, cli.quiet).context("demo failed")?;
        }
    }
    Ok(())
}

/// `osipy list [KIND]`: what a config can select, with the key that selects
/// it: modalities, every registry table, and the closed choices.
fn list(kind: Option<&str>) -> Result<()> {
    let reg = builtin_registry()?;
    let show = |k: &str| kind.is_none() || kind == Some(k);
    if show("modalities") {
        println!("modalities:  (config key: modality)");
        for m in osipy_pipeline::MODALITIES {
            println!("  {:<18} {}", m.id(), m.name());
        }
    }
    let tables = match kind {
        None => reg.tables(),
        Some("modalities") | Some("choices") => Vec::new(),
        Some(k) => vec![reg
            .table(k)
            .map_err(|e| anyhow::anyhow!("{e}; or `modalities`, `choices`"))?],
    };
    for (info, entries) in tables {
        println!("{}:  (config key: {})", info.id, info.config_key);
        for e in entries {
            println!("  {:<18} {}", e.name, e.description);
        }
    }
    if show("choices") {
        println!("choices:  (closed sets, by config key)");
        for m in osipy_pipeline::MODALITIES {
            for (key, names) in m.choices() {
                println!(
                    "  {:<36} {}",
                    format!("{}: pipeline.{key}", m.id()),
                    names.join(" | ")
                );
            }
        }
        for (key, names) in osipy_pipeline::config::common_choices() {
            println!("  {key:<36} {}", names.join(" | "));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}
