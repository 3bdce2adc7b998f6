"""dmipy 1.0.5 (and AMICO, if installed) fitting NODDI-Watson on the data
`cargo xtask bench-compare microstructure` wrote, timed.

Usage: python bench_microstructure.py DATA_DIR [--no-amico]
Reads DATA_DIR/{bvals,bvecs,signal}.npy and timing.json; writes
DATA_DIR/{dmipy,amico}_{odi,ndi,fwf,dir}.npy and prints a SUMMARY_JSON line.
"""
import json
import os
import sys
import time

import numpy as np


def dmipy_noddi(bvals, bvecs, timing, signal):
    from dmipy.core.acquisition_scheme import acquisition_scheme_from_bvalues
    from dmipy.core.modeling_framework import MultiCompartmentModel
    from dmipy.distributions.distribute_models import SD1WatsonDistributed
    from dmipy.signal_models import cylinder_models, gaussian_models

    acq = acquisition_scheme_from_bvalues(bvals * 1e6, bvecs, timing["delta"], timing["Delta"])
    # NODDI as in dmipy's own example (Zhang et al. 2012): ball at 3e-9 m^2/s,
    # Watson-dispersed stick and tortuous zeppelin sharing lambda_par = 1.7e-9.
    bundle = SD1WatsonDistributed(models=[cylinder_models.C1Stick(), gaussian_models.G2Zeppelin()])
    bundle.set_tortuous_parameter("G2Zeppelin_1_lambda_perp", "C1Stick_1_lambda_par", "partial_volume_0")
    bundle.set_equal_parameter("G2Zeppelin_1_lambda_par", "C1Stick_1_lambda_par")
    bundle.set_fixed_parameter("G2Zeppelin_1_lambda_par", 1.7e-9)
    model = MultiCompartmentModel(models=[gaussian_models.G1Ball(), bundle])
    model.set_fixed_parameter("G1Ball_1_lambda_iso", 3e-9)
    start = time.time()
    fit = model.fit(acq, signal, solver="brute2fine", use_parallel_processing=True,
                    number_of_processors=os.cpu_count())
    wall = time.time() - start
    p = fit.fitted_parameters
    mu = p["SD1WatsonDistributed_1_SD1Watson_1_mu"]
    out = {
        "odi": p["SD1WatsonDistributed_1_SD1Watson_1_odi"],
        "ndi": p["SD1WatsonDistributed_1_partial_volume_0"],
        "fwf": p["partial_volume_0"],
        "dir": np.stack([np.sin(mu[:, 0]) * np.cos(mu[:, 1]), np.sin(mu[:, 0]) * np.sin(mu[:, 1]), np.cos(mu[:, 0])], 1),
    }
    return wall, out


def amico_noddi(data_dir, bvals, bvecs, signal):
    import amico
    import nibabel as nib

    work = os.path.join(data_dir, "amico")
    os.makedirs(work, exist_ok=True)
    nv = signal.shape[0]
    nib.save(nib.Nifti1Image(signal.reshape(nv, 1, 1, -1).astype(np.float32), np.eye(4)), os.path.join(work, "dwi.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((nv, 1, 1), np.uint8), np.eye(4)), os.path.join(work, "mask.nii.gz"))
    np.savetxt(os.path.join(work, "dwi.bval"), bvals[None, :], fmt="%.1f")
    np.savetxt(os.path.join(work, "dwi.bvec"), bvecs.T, fmt="%.8f")
    amico.setup()
    amico.util.fsl2scheme(os.path.join(work, "dwi.bval"), os.path.join(work, "dwi.bvec"), os.path.join(work, "dwi.scheme"))
    ae = amico.Evaluation(work, ".", output_path=os.path.join(work, "out"))
    ae.set_config("nthreads", os.cpu_count())
    ae.set_config("BLAS_nthreads", 1)
    ae.load_data(os.path.join(work, "dwi.nii.gz"), os.path.join(work, "dwi.scheme"),
                 mask_filename=os.path.join(work, "mask.nii.gz"), b0_thr=10)
    ae.set_model("NODDI")
    start = time.time()
    ae.generate_kernels(regenerate=True)
    ae.load_kernels()
    kernels = time.time() - start
    start = time.time()
    ae.fit()
    wall = time.time() - start
    ae.save_results()
    res = {}
    for key, name in [("ndi", "fit_NDI"), ("odi", "fit_ODI"), ("fwf", "fit_FWF")]:
        res[key] = nib.load(os.path.join(work, "out", name + ".nii.gz")).get_fdata().reshape(nv)
    res["dir"] = nib.load(os.path.join(work, "out", "fit_dir.nii.gz")).get_fdata().reshape(nv, 3)
    return wall, kernels, res


def main():
    data_dir = sys.argv[1]
    bvals = np.load(os.path.join(data_dir, "bvals.npy"))
    bvecs = np.load(os.path.join(data_dir, "bvecs.npy"))
    signal = np.load(os.path.join(data_dir, "signal.npy"))
    with open(os.path.join(data_dir, "timing.json")) as f:
        timing = json.load(f)
    summary = {"voxels": int(signal.shape[0]), "cpus": os.cpu_count()}
    wall, out = dmipy_noddi(bvals, bvecs, timing, signal)
    for k, v in out.items():
        np.save(os.path.join(data_dir, f"dmipy_{k}.npy"), np.asarray(v, dtype=np.float64))
    summary["dmipy"] = {"version": "1.0.5", "solver": "brute2fine", "wall_s": wall, "voxels_per_s": signal.shape[0] / wall}
    print(f"dmipy 1.0.5 brute2fine: {signal.shape[0]} voxels in {wall:.1f} s ({signal.shape[0] / wall:.1f} voxels/s)")
    if "--no-amico" not in sys.argv:
        try:
            wall, kernels, res = amico_noddi(data_dir, bvals, bvecs, signal)
            for k, v in res.items():
                np.save(os.path.join(data_dir, f"amico_{k}.npy"), np.asarray(v, dtype=np.float64))
            import amico
            summary["amico"] = {"version": getattr(amico, "__version__", "?"), "wall_s": wall, "kernels_s": kernels,
                                "voxels_per_s": signal.shape[0] / wall}
            print(f"AMICO NODDI: {signal.shape[0]} voxels in {wall:.1f} s ({signal.shape[0] / wall:.1f} voxels/s), kernels {kernels:.1f} s")
        except Exception as e:  # AMICO is optional: say why it is missing
            summary["amico"] = {"error": f"{type(e).__name__}: {e}"}
            print(f"AMICO skipped: {type(e).__name__}: {e}")
    print("SUMMARY_JSON " + json.dumps(summary))


if __name__ == "__main__":
    main()
