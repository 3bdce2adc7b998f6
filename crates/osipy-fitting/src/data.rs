//! Where a batch fit gets each voxel's samples.

use ndarray::ArrayView2;
use osipy_core::QualityCode;

/// The samples of every voxel, as a batch fit reads them: rows of an array
/// (`voxels x samples`, f64 or f32), or a source that computes each row when
/// it is needed (a DCE signal converted to concentration), so that a run
/// need not hold a converted copy of its whole series.
///
/// A worker calls [`VoxelData::load`] once per voxel, into its own buffer:
/// an implementation must not allocate there.
pub trait VoxelData: Sync {
    /// Number of voxels and samples per voxel.
    fn dim(&self) -> (usize, usize);

    /// Writes the samples of voxel `v` into `out` (one per sample), or
    /// returns why the voxel cannot be fitted (it is then stored unfitted
    /// with that quality code, NaN parameters and NaN R^2).
    fn load(&self, v: usize, out: &mut [f64]) -> Result<(), QualityCode>;
}

impl<T: Copy + Into<f64> + Sync> VoxelData for ArrayView2<'_, T> {
    fn dim(&self) -> (usize, usize) {
        ArrayView2::dim(self)
    }

    fn load(&self, v: usize, out: &mut [f64]) -> Result<(), QualityCode> {
        for (o, s) in out.iter_mut().zip(self.row(v)) {
            *o = (*s).into();
        }
        Ok(())
    }
}

impl<D: VoxelData + ?Sized> VoxelData for &D {
    fn dim(&self) -> (usize, usize) {
        (**self).dim()
    }

    fn load(&self, v: usize, out: &mut [f64]) -> Result<(), QualityCode> {
        (**self).load(v, out)
    }
}
