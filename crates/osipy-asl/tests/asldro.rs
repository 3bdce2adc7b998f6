//! ASLDRO validation spreadsheets (Gold Standard Phantoms, MIT; copied to
//! `testdata/asldro/`, see testdata/README.md): the general kinetic model
//! for PASL and (p)CASL and the MRI signal equations, at the upstream
//! tests' tolerances (numpy `assert_array_almost_equal`, absolute
//! 1.5e-10 for the GKM, 1.5e-9 for the signals).

use osipy_asl::kinetics::{tissue, LabelingScheme, Physio, Timing};
use osipy_asl::signal::{gradient_echo, inversion_recovery, spin_echo};
use std::collections::HashMap;
use std::path::Path;

/// Data rows of a sheet by header name (row 5 is the header).
fn sheet(name: &str) -> Vec<HashMap<String, f64>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/asldro")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[4].split(',').collect();
    lines[5..]
        .iter()
        .filter(|l| !l.trim().trim_matches(',').is_empty())
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .filter_map(|(h, v)| v.trim().parse::<f64>().ok().map(|x| (h.to_string(), x)))
                .collect()
        })
        .collect()
}

fn check_gkm(file: &str, scheme: LabelingScheme) {
    let rows = sheet(file);
    assert_eq!(rows.len(), 26, "{file}: 26 signal times");
    for r in rows {
        let p = Physio {
            t1_blood: r["t1_arterial_blood"],
            t1_tissue: r["t1_tissue"],
            lambda: r["lambda_blood_brain"],
            alpha: r["label_efficiency"],
        };
        let t = r["signal_time"];
        let tau = r["label_duration"];
        // (p)CASL counts the PLD from the end of labeling; PASL's is TI.
        let pld = if scheme.is_continuous() { t - tau } else { t };
        let dm = r["m0"]
            * tissue(
                scheme,
                r["perfusion_rate"],
                r["transit_time"],
                Timing { pld, tau },
                &p,
            );
        let expected = r["delta_m"];
        assert!(
            (dm - expected).abs() < 1.5e-10,
            "{file} t = {t}: {dm} vs {expected}"
        );
    }
}

#[test]
fn gkm_pasl_matches_asldro() {
    check_gkm("gkm_validation_calculations__PASL.csv", LabelingScheme::Pasl);
}

#[test]
fn gkm_casl_matches_asldro() {
    check_gkm("gkm_validation_calculations__CASL.csv", LabelingScheme::Casl);
    // pCASL uses the same continuous-labeling model.
    check_gkm("gkm_validation_calculations__CASL.csv", LabelingScheme::Pcasl);
}

#[test]
fn gradient_echo_matches_asldro() {
    let rows = sheet("mri_signal_validation_calculations__GE.csv");
    assert!(rows.len() >= 10);
    for r in rows {
        let s = gradient_echo(
            r["m0"],
            r["t1"],
            r["t2"],
            r["t2_star"],
            r["echo_time"],
            r["repetition_time"],
            r["flip_angle"],
        );
        assert!(
            (s - r["expected"]).abs() < 1.5e-9,
            "TE {}: {s} vs {}",
            r["echo_time"],
            r["expected"]
        );
    }
}

#[test]
fn spin_echo_matches_asldro() {
    let rows = sheet("mri_signal_validation_calculations__SE.csv");
    assert!(rows.len() >= 10);
    for r in rows {
        let s = spin_echo(r["m0"], r["t1"], r["t2"], r["acq_te"], r["acq_tr"]);
        assert!(
            (s - r["expected"]).abs() < 1.5e-9,
            "TE {}: {s} vs {}",
            r["acq_te"],
            r["expected"]
        );
    }
}

#[test]
fn inversion_recovery_matches_asldro() {
    let rows = sheet("mri_signal_validation_calculations__IR.csv");
    assert!(rows.len() >= 15);
    for r in rows {
        let s = inversion_recovery(
            r["m0"],
            r["t1"],
            r["t2"],
            r["echo_time"],
            r["repetition_time"],
            r["inversion_time"],
            (r["flip_angle"], r["inversion_angle"]),
        );
        assert!(
            (s - r["expected"]).abs() < 1.5e-9,
            "TI {}: {s} vs {}",
            r["inversion_time"],
            r["expected"]
        );
    }
}
