//! Small streaming linear least squares for data-driven initial guesses.

/// Normal equations of a `K`-unknown linear least-squares problem,
/// accumulated row by row so no per-voxel arrays are needed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Normal<const K: usize> {
    a: [[f64; K]; K],
    b: [f64; K],
}

impl<const K: usize> Normal<K> {
    pub(crate) fn new() -> Self {
        Normal {
            a: [[0.0; K]; K],
            b: [0.0; K],
        }
    }

    /// Adds the equation `row . x = y` (lower triangle only; `solve`
    /// mirrors it).
    #[inline]
    pub(crate) fn add(&mut self, row: [f64; K], y: f64) {
        for i in 0..K {
            for j in 0..=i {
                self.a[i][j] += row[i] * row[j];
            }
            self.b[i] += row[i] * y;
        }
    }

    /// Solves with Jacobi column scaling and partial pivoting; `None` when
    /// singular or non-finite.
    pub(crate) fn solve(&self) -> Option<[f64; K]> {
        let mut full = self.a;
        for i in 0..K {
            for j in (i + 1)..K {
                full[i][j] = full[j][i];
            }
        }
        let mut s = [1.0; K];
        for i in 0..K {
            if full[i][i] > 0.0 {
                s[i] = 1.0 / full[i][i].sqrt();
            }
        }
        let mut m = [[0.0; K]; K];
        let mut r = [0.0; K];
        for i in 0..K {
            for j in 0..K {
                m[i][j] = full[i][j] * s[i] * s[j];
            }
            r[i] = self.b[i] * s[i];
        }
        for c in 0..K {
            let p = (c..K).max_by(|&x, &y| m[x][c].abs().total_cmp(&m[y][c].abs()))?;
            if !(m[p][c].abs() > 1e-13) {
                return None;
            }
            m.swap(c, p);
            r.swap(c, p);
            for i in (c + 1)..K {
                let f = m[i][c] / m[c][c];
                for j in c..K {
                    m[i][j] -= f * m[c][j];
                }
                r[i] -= f * r[c];
            }
        }
        let mut x = [0.0; K];
        for i in (0..K).rev() {
            let mut v = r[i];
            for j in (i + 1)..K {
                v -= m[i][j] * x[j];
            }
            x[i] = v / m[i][i];
        }
        for i in 0..K {
            x[i] *= s[i];
        }
        x.iter().all(|v| v.is_finite()).then_some(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_exact_coefficients_of_badly_scaled_columns() {
        // y = 2 + 3e-4 x + 5e3 z, columns spanning 8 orders of magnitude.
        let mut n = Normal::<3>::new();
        for i in 0..20 {
            let (x, z) = (i as f64 * 1e3, (i as f64).sin() * 1e-4);
            n.add([1.0, x, z], 2.0 + 3e-4 * x + 5e3 * z);
        }
        let c = n.solve().unwrap();
        assert!(
            (c[0] - 2.0).abs() < 1e-9 && (c[1] - 3e-4).abs() < 1e-12 && (c[2] - 5e3).abs() < 1e-6,
            "{c:?}"
        );
        let mut singular = Normal::<2>::new();
        singular.add([1.0, 2.0], 1.0);
        singular.add([2.0, 4.0], 2.0);
        assert!(singular.solve().is_none());
    }
}
