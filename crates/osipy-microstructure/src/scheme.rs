//! The acquisition scheme: b-values, gradient directions, pulse timing and
//! the shells found in them.
//!
//! Units inside this crate are micrometres and milliseconds, so that the
//! numbers the fitter sees are of order one: b in ms/um^2 (1 ms/um^2 =
//! 1000 s/mm^2), diffusivities in um^2/ms (1 um^2/ms = 1e-3 mm^2/s =
//! 1e-9 m^2/s), radii in um, times in ms, q in 1/um. Files and configs use
//! s/mm^2, mm^2/s, um and seconds; the conversions are here and in
//! [`crate::compartment::ParamKind`].

use osipy_core::{OsipyError, Result};

/// b-values at or below this (s/mm^2) count as b = 0 (dmipy's default).
pub const B0_THRESHOLD: f64 = 10.0;
/// b-values closer than this (s/mm^2) to their neighbour belong to one shell.
pub const SHELL_GAP: f64 = 50.0;
/// Gradient vectors of b > 0 volumes may differ from unit length by this
/// much (rounding in the file); they are then normalised.
pub const NORM_TOLERANCE: f64 = 0.05;

/// One shell: volumes whose b-values cluster together.
#[derive(Debug, Clone, PartialEq)]
pub struct Shell {
    /// Mean b-value of the shell (ms/um^2).
    pub b: f64,
    /// Volumes of the shell, in acquisition order.
    pub volumes: Vec<usize>,
}

/// Pulsed-gradient spin-echo acquisition scheme.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheme {
    /// b-value of each volume (ms/um^2).
    pub b: Vec<f64>,
    /// Unit gradient direction of each volume (zero for b = 0).
    pub g: Vec<[f64; 3]>,
    /// Gradient pulse duration delta (ms), when known.
    pub delta: Option<f64>,
    /// Gradient pulse separation Delta (ms), when known.
    pub big_delta: Option<f64>,
    /// Echo time (ms), when known (recorded only).
    pub te: Option<f64>,
    /// Shells, by increasing b; a b = 0 shell first when there is one.
    pub shells: Vec<Shell>,
    /// Shell index of each volume.
    pub shell_of: Vec<usize>,
}

/// Where the numbers came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The b-value source (file name or key).
    pub bval: &'a str,
    /// The gradient-direction source.
    pub bvec: &'a str,
}

impl Scheme {
    /// A scheme from b-values (s/mm^2), gradient directions and timing
    /// (seconds). Directions of b > 0 volumes must have unit length within
    /// [`NORM_TOLERANCE`]; b = 0 volumes may have any direction.
    pub fn new(
        b_s_per_mm2: &[f64],
        g: &[[f64; 3]],
        delta_s: Option<f64>,
        big_delta_s: Option<f64>,
        te_s: Option<f64>,
        src: Sources<'_>,
    ) -> Result<Scheme> {
        if b_s_per_mm2.len() != g.len() {
            return Err(OsipyError::metadata(
                format!("gradient directions in {}", src.bvec),
                format!("{} directions", g.len()),
                format!(
                    "one per b-value: {} (the b-values in {})",
                    b_s_per_mm2.len(),
                    src.bval
                ),
            ));
        }
        let mut dirs = Vec::with_capacity(g.len());
        for (i, (&b, v)) in b_s_per_mm2.iter().zip(g).enumerate() {
            if !(b.is_finite() && b >= 0.0) {
                return Err(OsipyError::metadata(
                    format!("b-value of volume {i} in {}", src.bval),
                    b,
                    "a finite, non-negative b-value in s/mm^2",
                ));
            }
            let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            if b <= B0_THRESHOLD {
                dirs.push([0.0; 3]);
            } else if (norm - 1.0).abs() <= NORM_TOLERANCE {
                dirs.push([v[0] / norm, v[1] / norm, v[2] / norm]);
            } else {
                return Err(OsipyError::metadata(
                    format!("gradient direction of volume {i} in {} (b = {b} s/mm^2)", src.bvec),
                    format!("[{}, {}, {}] with length {norm:.4}", v[0], v[1], v[2]),
                    format!("a unit vector (length within 1 +- {NORM_TOLERANCE}) for every b > {B0_THRESHOLD} s/mm^2"),
                ));
            }
        }
        let ms = |s: Option<f64>, key: &str| -> Result<Option<f64>> {
            match s {
                None => Ok(None),
                Some(v) if v > 0.0 && v < 1.0 => Ok(Some(v * 1000.0)),
                Some(v) => Err(OsipyError::metadata(
                    format!("{key} (s)"),
                    v,
                    "a positive time below 1 s (e.g. 0.0106 for 10.6 ms); values of 1 or more look like milliseconds",
                )),
            }
        };
        let delta = ms(delta_s, "pipeline.delta")?;
        let big_delta = ms(big_delta_s, "pipeline.Delta")?;
        if let (Some(d), Some(bd)) = (delta, big_delta) {
            if d > bd {
                return Err(OsipyError::metadata(
                    "pipeline.delta (s)",
                    d / 1000.0,
                    format!(
                        "a pulse duration no longer than the separation Delta = {} s",
                        bd / 1000.0
                    ),
                ));
            }
        }
        let b: Vec<f64> = b_s_per_mm2.iter().map(|b| b / 1000.0).collect();
        let (shells, shell_of) = find_shells(b_s_per_mm2);
        Ok(Scheme {
            b,
            g: dirs,
            delta,
            big_delta,
            te: te_s.map(|t| t * 1000.0),
            shells,
            shell_of,
        })
    }

    /// Number of volumes.
    pub fn len(&self) -> usize {
        self.b.len()
    }

    /// Whether the scheme has no volumes.
    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    /// (delta, Delta) in ms, or an error naming what needs them.
    pub fn timing(&self, needed_for: &str) -> Result<(f64, f64)> {
        match (self.delta, self.big_delta) {
            (Some(d), Some(bd)) => Ok((d, bd)),
            _ => Err(OsipyError::MissingParameter {
                name: "pipeline.delta and pipeline.Delta".into(),
                needed_for: needed_for.into(),
                hint: "give the gradient pulse duration and separation in seconds, e.g. delta = 0.0106 and Delta = 0.0431 (or SmallDelta / LargeDelta in the DWI's JSON sidecar)".into(),
            }),
        }
    }

    /// q = sqrt(b / (Delta - delta/3)) / (2 pi) (1/um) of volume `i`, the
    /// wave number of the short-pulse compartments (Callaghan 1991).
    pub fn q(&self, b: f64, delta: f64, big_delta: f64) -> f64 {
        (b / (big_delta - delta / 3.0)).max(0.0).sqrt() / (2.0 * std::f64::consts::PI)
    }
}

/// `n` unit vectors spread evenly over the sphere (a Fibonacci lattice,
/// turned by `twist` radians about z), for phantoms and examples.
pub fn fibonacci_directions(n: usize, twist: f64) -> Vec<[f64; 3]> {
    let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
    (0..n)
        .map(|i| {
            let z = 1.0 - 2.0 * (i as f64 + 0.5) / n as f64;
            let r = (1.0 - z * z).sqrt();
            let p = golden * i as f64 + twist;
            [r * p.cos(), r * p.sin(), z]
        })
        .collect()
}

/// Shells by sorting b-values (s/mm^2) and splitting where neighbours are
/// more than [`SHELL_GAP`] apart; b <= [`B0_THRESHOLD`] is its own shell.
fn find_shells(b: &[f64]) -> (Vec<Shell>, Vec<usize>) {
    let mut order: Vec<usize> = (0..b.len()).collect();
    order.sort_by(|&i, &j| b[i].total_cmp(&b[j]).then(i.cmp(&j)));
    let mut shells: Vec<Vec<usize>> = Vec::new();
    let mut last = f64::NEG_INFINITY;
    for &i in &order {
        let new = match shells.last() {
            None => true,
            Some(_) if (last <= B0_THRESHOLD) != (b[i] <= B0_THRESHOLD) => true,
            Some(_) => b[i] - last > SHELL_GAP,
        };
        if new {
            shells.push(Vec::new());
        }
        if let Some(s) = shells.last_mut() {
            s.push(i);
        }
        last = b[i];
    }
    let mut shell_of = vec![0; b.len()];
    let shells = shells
        .into_iter()
        .enumerate()
        .map(|(k, mut v)| {
            v.sort_unstable();
            for &i in &v {
                shell_of[i] = k;
            }
            let mean = v.iter().map(|&i| b[i]).sum::<f64>() / v.len() as f64;
            Shell {
                b: if mean <= B0_THRESHOLD { 0.0 } else { mean / 1000.0 },
                volumes: v,
            }
        })
        .collect();
    (shells, shell_of)
}

/// Gradient directions from the text of a `.bvec` file: FSL's three rows of
/// one value per volume, or one row of three values per volume.
pub fn parse_bvecs(text: &str, source: &str, n_volumes: usize) -> Result<Vec<[f64; 3]>> {
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let row: std::result::Result<Vec<f64>, _> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::parse::<f64>)
            .collect();
        rows.push(row.map_err(|_| {
            OsipyError::metadata(
                format!("line {} of {source}", k + 1),
                format!("\"{line}\""),
                "numbers separated by spaces or commas",
            )
        })?);
    }
    let shape = || {
        format!(
            "{} rows of {}",
            rows.len(),
            rows.iter()
                .map(|r| r.len().to_string())
                .collect::<Vec<_>>()
                .join("/")
        )
    };
    if rows.len() == 3 && rows.iter().all(|r| r.len() == n_volumes) {
        Ok((0..n_volumes)
            .map(|i| [rows[0][i], rows[1][i], rows[2][i]])
            .collect())
    } else if rows.len() == n_volumes && rows.iter().all(|r| r.len() == 3) {
        Ok(rows.iter().map(|r| [r[0], r[1], r[2]]).collect())
    } else {
        Err(OsipyError::metadata(
            format!("gradient directions in {source}"),
            shape(),
            format!("3 rows of {n_volumes} values (FSL .bvec), or {n_volumes} rows of 3, one per volume"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Sources<'static> = Sources {
        bval: "dwi.bval",
        bvec: "dwi.bvec",
    };

    #[test]
    fn shells_cluster_b_values() {
        let b = [0.0, 5.0, 995.0, 1000.0, 2010.0, 1005.0, 1990.0, 3000.0];
        let g = [[1.0, 0.0, 0.0]; 8];
        let s = Scheme::new(&b, &g, None, None, None, SRC).unwrap();
        assert_eq!(s.shells.len(), 4);
        assert_eq!(s.shells[0].volumes, vec![0, 1]);
        assert_eq!(s.shells[0].b, 0.0);
        assert_eq!(s.shells[1].volumes, vec![2, 3, 5]);
        assert!((s.shells[2].b - 2.0).abs() < 1e-12);
        assert_eq!(s.shell_of, vec![0, 0, 1, 1, 2, 1, 2, 3]);
    }

    #[test]
    fn bad_vectors_and_timing_are_named() {
        let e = Scheme::new(
            &[0.0, 1000.0],
            &[[0.0; 3], [0.5, 0.0, 0.0]],
            None,
            None,
            None,
            SRC,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("volume 1") && e.contains("dwi.bvec") && e.contains("0.5000"),
            "{e}"
        );
        let e = Scheme::new(&[1000.0], &[[1.0, 0.0, 0.0]; 2], None, None, None, SRC)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 directions") && e.contains("one per b-value: 1"),
            "{e}"
        );
        let e = Scheme::new(&[0.0], &[[0.0; 3]], Some(10.6), Some(43.1), None, SRC)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline.delta") && e.contains("milliseconds"), "{e}");
        let e = Scheme::new(&[0.0], &[[0.0; 3]], Some(0.05), Some(0.02), None, SRC)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no longer than the separation"), "{e}");
        let ok = Scheme::new(
            &[1000.0],
            &[[0.0, 0.0, 1.02]],
            Some(0.0106),
            Some(0.0431),
            None,
            SRC,
        )
        .unwrap();
        assert_eq!(ok.g[0], [0.0, 0.0, 1.0]);
        assert!(ok.timing("x").is_ok());
        assert!(Scheme::new(&[0.0], &[[0.0; 3]], None, None, None, SRC)
            .unwrap()
            .timing("cylinder_gpd")
            .unwrap_err()
            .to_string()
            .contains("cylinder_gpd"));
    }

    #[test]
    fn bvecs_read_in_both_layouts() {
        // Four volumes, so the two layouts cannot be confused (with three,
        // FSL's rows are assumed).
        let fsl = "0 1 0 0\n0 0 1 0\n0 0 0 1\n";
        let v = parse_bvecs(fsl, "a.bvec", 4).unwrap();
        assert_eq!(
            v,
            vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        );
        let rows = "0 0 0\n1 0 0\n0 1 0\n0,0,1\n";
        assert_eq!(parse_bvecs(rows, "a.bvec", 4).unwrap(), v);
        let e = parse_bvecs(fsl, "a.bvec", 5).unwrap_err().to_string();
        assert!(
            e.contains("a.bvec") && e.contains("3 rows of 4/4/4") && e.contains("3 rows of 5"),
            "{e}"
        );
    }
}
