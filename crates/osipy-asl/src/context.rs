//! What each volume of an ASL series is (`aslcontext.tsv` or the
//! configured label/control order), the timing of each, and the
//! label/control difference methods (registry `asl_difference`).

use crate::kinetics::Timing;
use ndarray::{Array2, ArrayView2};
use osipy_core::{Extension, KindInfo, OsipyError, Result};
use osipy_io::Choice;
use serde::{Deserialize, Serialize};

/// The kind of one volume (ASL-BIDS `aslcontext.tsv` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeType {
    /// Control (no labeling).
    Control,
    /// Label (arterial blood inverted).
    Label,
    /// Proton-density (M0) image.
    M0Scan,
    /// An already subtracted control - label image.
    DeltaM,
    /// An already quantified CBF image (kept out).
    Cbf,
    /// A volume acquired without RF (noise; kept out).
    NoRf,
    /// A dummy volume at the start of the series (kept out).
    Dummy,
}

impl VolumeType {
    const NAMES: [(&'static str, VolumeType); 6] = [
        ("control", VolumeType::Control),
        ("label", VolumeType::Label),
        ("m0scan", VolumeType::M0Scan),
        ("deltam", VolumeType::DeltaM),
        ("cbf", VolumeType::Cbf),
        ("norf", VolumeType::NoRf),
    ];

    /// Whether the volume carries a label/control contrast.
    pub fn is_asl(self) -> bool {
        matches!(self, VolumeType::Control | VolumeType::Label | VolumeType::DeltaM)
    }
}

/// Reads `aslcontext.tsv` text: a `volume_type` header, then one name per
/// volume (`control`, `label`, `m0scan`, `deltam`, `cbf`, `noRF`).
pub fn parse_aslcontext(text: &str, source: &str) -> Result<Vec<VolumeType>> {
    let mut lines = text.lines().map(|l| l.split('\t').next().unwrap_or("").trim());
    match lines.next() {
        Some("volume_type") => {}
        found => {
            return Err(OsipyError::data(
                format!("first line of {source}"),
                format!("\"{}\"", found.unwrap_or("")),
                "the header volume_type (ASL-BIDS aslcontext.tsv)",
            ))
        }
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            VolumeType::NAMES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(l))
                .map(|(_, t)| *t)
                .ok_or_else(|| {
                    OsipyError::data(
                        format!("volume {} of {source}", i + 1),
                        format!("\"{l}\""),
                        "one of control, label, m0scan, deltam, cbf, noRF",
                    )
                })
        })
        .collect()
}

/// The volume order when there is no `aslcontext.tsv`
/// (`pipeline.label_control_order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelControlOrder {
    /// control, label, control, label, ...
    ControlLabel,
    /// label, control, label, control, ...
    LabelControl,
    /// Every volume is already a difference (control - label).
    Deltam,
}

impl Choice for LabelControlOrder {
    const ALL: &'static [Self] = &[
        LabelControlOrder::ControlLabel,
        LabelControlOrder::LabelControl,
        LabelControlOrder::Deltam,
    ];
}

/// Volume types of an `n`-volume series in `order` after `dummies`
/// leading dummy volumes. An odd number of label/control volumes does not
/// pair: an error.
pub fn volume_types(order: LabelControlOrder, n: usize, dummies: usize) -> Result<Vec<VolumeType>> {
    if dummies >= n {
        return Err(OsipyError::data(
            "pipeline.dummy_volumes",
            dummies.to_string(),
            format!("fewer than the {n} volumes of the series"),
        ));
    }
    let rest = n - dummies;
    let pair = match order {
        LabelControlOrder::ControlLabel => [VolumeType::Control, VolumeType::Label],
        LabelControlOrder::LabelControl => [VolumeType::Label, VolumeType::Control],
        LabelControlOrder::Deltam => [VolumeType::DeltaM, VolumeType::DeltaM],
    };
    if order != LabelControlOrder::Deltam && rest % 2 == 1 {
        return Err(OsipyError::data(
            "label/control volumes of the ASL series",
            format!("{rest} volumes after {dummies} dummy volume(s)"),
            "an even number (label and control pairs); or give data.aslcontext, or pipeline.dummy_volumes",
        ));
    }
    Ok((0..n)
        .map(|i| {
            if i < dummies {
                VolumeType::Dummy
            } else {
                pair[(i - dummies) % 2]
            }
        })
        .collect())
}

/// A per-volume setting from a config value: one value for every volume,
/// or a list with one value per volume of the series, per label/control
/// volume, or per difference (label/control pair or deltam volume).
pub fn per_volume(values: &[f64], types: &[VolumeType], key: &str) -> Result<Vec<f64>> {
    let asl: Vec<usize> = (0..types.len()).filter(|i| types[*i].is_asl()).collect();
    let pairs = types
        .iter()
        .filter(|t| matches!(t, VolumeType::Label | VolumeType::DeltaM))
        .count();
    let mut out = vec![f64::NAN; types.len()];
    match values.len() {
        1 => out.iter_mut().for_each(|o| *o = values[0]),
        n if n == types.len() => out.copy_from_slice(values),
        n if n == asl.len() => {
            for (k, i) in asl.iter().enumerate() {
                out[*i] = values[k];
            }
        }
        n if n == pairs => {
            // The k-th label (or deltam) and the k-th control share value k.
            let (mut k_label, mut k_control) = (0, 0);
            for (i, t) in types.iter().enumerate() {
                match t {
                    VolumeType::Label | VolumeType::DeltaM => {
                        out[i] = values[k_label];
                        k_label += 1;
                    }
                    VolumeType::Control => {
                        out[i] = values[k_control.min(n - 1)];
                        k_control += 1;
                    }
                    _ => {}
                }
            }
        }
        n => {
            return Err(OsipyError::data(
                format!("number of values of pipeline.{key}"),
                n.to_string(),
                format!(
                    "1, or one per volume ({}), per label/control volume ({}) or per difference ({})",
                    types.len(),
                    asl.len(),
                    pairs
                ),
            ))
        }
    }
    Ok(out)
}

/// The series cut into PLD groups: which volumes are controls, labels and
/// differences of each distinct timing.
#[derive(Debug, Clone)]
pub struct Groups {
    /// Distinct timings, by increasing PLD (then label duration).
    pub timings: Vec<Timing>,
    /// Volumes of each group, in acquisition order.
    pub members: Vec<Vec<usize>>,
}

impl Groups {
    /// Groups the label/control volumes of `types` by their timing.
    pub fn new(types: &[VolumeType], plds: &[f64], taus: &[f64]) -> Groups {
        let mut timings: Vec<Timing> = Vec::new();
        for i in (0..types.len()).filter(|i| types[*i].is_asl()) {
            let t = Timing {
                pld: plds[i],
                tau: taus[i],
            };
            if !timings.contains(&t) {
                timings.push(t);
            }
        }
        timings.sort_by(|a, b| a.pld.total_cmp(&b.pld).then(a.tau.total_cmp(&b.tau)));
        let members = timings
            .iter()
            .map(|t| {
                (0..types.len())
                    .filter(|i| types[*i].is_asl() && plds[*i] == t.pld && taus[*i] == t.tau)
                    .collect()
            })
            .collect();
        Groups { timings, members }
    }
}

/// What a difference method reads.
#[derive(Debug, Clone, Copy)]
pub struct DifferenceInput<'a> {
    /// The series, voxels x volumes.
    pub series: ArrayView2<'a, f64>,
    /// Type of each volume.
    pub types: &'a [VolumeType],
    /// PLD groups.
    pub groups: &'a Groups,
}

/// A difference method: ΔM (control - label) per voxel and PLD group,
/// averaged over the group's repeats (and its deltam volumes).
#[derive(Debug, Clone, Copy)]
pub struct DifferenceMethod(pub fn(&DifferenceInput<'_>) -> Result<Array2<f64>>);

impl Extension for DifferenceMethod {
    const KIND: KindInfo = KindInfo {
        id: "asl_difference",
        label: "ASL label/control difference methods",
        config_key: "pipeline.difference_method",
    };
}

/// The group's volumes of type `t`.
fn of_type(members: &[usize], types: &[VolumeType], t: VolumeType) -> Vec<usize> {
    members.iter().copied().filter(|i| types[*i] == t).collect()
}

/// Runs `per_group(controls, labels)` -> list of (weights per volume)
/// differences for each group, adds the group's deltam volumes, and
/// averages each voxel's differences.
fn difference(
    input: &DifferenceInput<'_>,
    name: &str,
    per_group: impl Fn(&[usize], &[usize]) -> Result<Vec<Vec<(usize, f64)>>>,
) -> Result<Array2<f64>> {
    let n_vox = input.series.nrows();
    let mut out = Array2::zeros((n_vox, input.groups.timings.len()));
    for (g, members) in input.groups.members.iter().enumerate() {
        let controls = of_type(members, input.types, VolumeType::Control);
        let labels = of_type(members, input.types, VolumeType::Label);
        let mut diffs = if controls.is_empty() && labels.is_empty() {
            Vec::new()
        } else if controls.is_empty() || labels.is_empty() {
            return Err(unpaired(
                input.groups.timings[g],
                controls.len(),
                labels.len(),
                name,
            ));
        } else {
            per_group(&controls, &labels)
                .map_err(|_| unpaired(input.groups.timings[g], controls.len(), labels.len(), name))?
        };
        diffs.extend(
            of_type(members, input.types, VolumeType::DeltaM)
                .into_iter()
                .map(|i| vec![(i, 1.0)]),
        );
        let k = diffs.len() as f64;
        for v in 0..n_vox {
            let row = input.series.row(v);
            let sum: f64 = diffs
                .iter()
                .map(|d| d.iter().map(|(i, w)| w * row[*i]).sum::<f64>())
                .sum();
            out[[v, g]] = sum / k;
        }
    }
    Ok(out)
}

fn unpaired(t: Timing, controls: usize, labels: usize, method: &str) -> OsipyError {
    OsipyError::data(
        format!("label/control volumes at PLD {} s", t.pld),
        format!("{controls} control and {labels} label volume(s)"),
        match method {
            "pairwise" => "as many controls as labels (pairwise); or difference_method = \"mean\"",
            _ => "at least one control and one label",
        },
    )
}

/// `pairwise`: the k-th control minus the k-th label of each PLD, averaged.
pub fn pairwise(input: &DifferenceInput<'_>) -> Result<Array2<f64>> {
    difference(input, "pairwise", |c, l| {
        if c.len() != l.len() {
            return Err(OsipyError::Validation(String::new()));
        }
        Ok(c.iter()
            .zip(l)
            .map(|(c, l)| vec![(*c, 1.0), (*l, -1.0)])
            .collect())
    })
}

/// `mean`: mean of the controls minus mean of the labels of each PLD.
pub fn mean(input: &DifferenceInput<'_>) -> Result<Array2<f64>> {
    difference(input, "mean", |c, l| {
        let mut d: Vec<(usize, f64)> = c.iter().map(|i| (*i, 1.0 / c.len() as f64)).collect();
        d.extend(l.iter().map(|i| (*i, -1.0 / l.len() as f64)));
        Ok(vec![d])
    })
}

/// `surround`: each label minus the mean of the controls acquired just
/// before and just after it (one side at the ends of the series), which
/// cancels linear signal drift (Aguirre et al. 2002).
pub fn surround(input: &DifferenceInput<'_>) -> Result<Array2<f64>> {
    difference(input, "surround", |c, l| {
        Ok(l.iter()
            .map(|lab| {
                let before = c.iter().rev().find(|i| *i < lab);
                let after = c.iter().find(|i| *i > lab);
                let mut d = vec![(*lab, -1.0)];
                match (before, after) {
                    (Some(b), Some(a)) => d.extend([(*b, 0.5), (*a, 0.5)]),
                    (Some(x), None) | (None, Some(x)) => d.push((*x, 1.0)),
                    (None, None) => {}
                }
                d
            })
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn aslcontext_is_read_with_its_names() {
        let t = parse_aslcontext("volume_type\nm0scan\ncontrol\nlabel\nnoRF\ndeltam\n", "x.tsv").unwrap();
        assert_eq!(
            t,
            [
                VolumeType::M0Scan,
                VolumeType::Control,
                VolumeType::Label,
                VolumeType::NoRf,
                VolumeType::DeltaM
            ]
        );
        let e = parse_aslcontext("volume_type\ncontrol\ntag\n", "x.tsv")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("volume 2 of x.tsv") && e.contains("\"tag\"") && e.contains("m0scan"),
            "{e}"
        );
        let e = parse_aslcontext("control\nlabel\n", "x.tsv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("volume_type"), "{e}");
    }

    #[test]
    fn orders_pair_or_say_why_not() {
        let t = volume_types(LabelControlOrder::LabelControl, 5, 1).unwrap();
        assert_eq!(t[0], VolumeType::Dummy);
        assert_eq!(t[1], VolumeType::Label);
        assert_eq!(t[2], VolumeType::Control);
        let e = volume_types(LabelControlOrder::ControlLabel, 5, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("5 volumes") && e.contains("even"), "{e}");
    }

    #[test]
    fn per_volume_values_accept_each_documented_length() {
        use VolumeType::*;
        let types = [M0Scan, Control, Label, Control, Label];
        assert_eq!(per_volume(&[2.0], &types, "plds").unwrap(), vec![2.0; 5]);
        let v = per_volume(&[1.0, 2.0], &types, "plds").unwrap();
        assert_eq!(&v[1..], &[1.0, 1.0, 2.0, 2.0]);
        let v = per_volume(&[1.0, 1.5, 2.0, 2.5], &types, "plds").unwrap();
        assert_eq!(&v[1..], &[1.0, 1.5, 2.0, 2.5]);
        let e = per_volume(&[1.0, 2.0, 3.0], &types, "plds")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pipeline.plds") && e.contains("3") && e.contains("per volume (5)"),
            "{e}"
        );
    }

    #[test]
    fn the_methods_agree_on_balanced_data_and_surround_cancels_drift() {
        use VolumeType::*;
        // control, label x 3 with a linear drift of 1 per volume; true ΔM = 10.
        let types = [Control, Label, Control, Label, Control, Label];
        let series = array![[100.0, 91.0, 102.0, 93.0, 104.0, 95.0]];
        let groups = Groups::new(&types, &[1.5; 6], &[1.8; 6]);
        let input = DifferenceInput {
            series: series.view(),
            types: &types,
            groups: &groups,
        };
        let p = pairwise(&input).unwrap()[[0, 0]];
        let m = mean(&input).unwrap()[[0, 0]];
        let s = surround(&input).unwrap()[[0, 0]];
        assert!((p - 9.0).abs() < 1e-12 && (m - 9.0).abs() < 1e-12, "{p} {m}");
        // Labels 1 and 3 sit between two controls: exact 10; the last uses only its control.
        assert!((s - (10.0 + 10.0 + 9.0) / 3.0).abs() < 1e-12, "{s}");
    }

    #[test]
    fn unpaired_groups_are_errors_naming_the_pld() {
        use VolumeType::*;
        let types = [Control, Label, Label];
        let series = array![[1.0, 0.9, 0.9]];
        let groups = Groups::new(&types, &[2.0; 3], &[1.8; 3]);
        let input = DifferenceInput {
            series: series.view(),
            types: &types,
            groups: &groups,
        };
        let e = pairwise(&input).unwrap_err().to_string();
        assert!(
            e.contains("PLD 2 s") && e.contains("1 control and 2 label"),
            "{e}"
        );
        assert!(mean(&input).is_ok());
    }
}
