"""Signals of dmipy 1.0.5's compartments on a fixed scheme, for the peer test
crates/osipy-microstructure/tests/dmipy_peer.rs.

Setup (dmipy 1.0.5 breaks on numpy >= 1.25):
    python3.11 -m venv venv && venv/bin/pip install numpy==1.24.4 scipy==1.10.1 dipy==1.9.0
    venv/bin/pip install --no-deps dmipy==1.0.5
    venv/bin/python xtask/python/dmipy_reference.py > testdata/microstructure/dmipy_signals.json

Each case names a dmipy model with its parameters (SI units) and the
osipy compartment with the same parameters in osipy's internal units
(um^2/ms, um, rad). The scheme: b = 0, 1000, 2500, 5000 s/mm^2, 12
directions per shell on a Fibonacci spiral, delta 10 ms, Delta 30 ms; the
plane models of dmipy have no orientation (the gradient is along the
normal), so their cases use a scheme with every direction along z.
"""
import json
import sys

import numpy as np
import dmipy
from dmipy.core.acquisition_scheme import acquisition_scheme_from_bvalues
from dmipy.distributions.distribute_models import SD1WatsonDistributed
from dmipy.signal_models import cylinder_models, gaussian_models, plane_models, sphere_models

SHELLS = [0.0, 1000.0, 2500.0, 5000.0]
N_DIR = 12
DELTA, BIG_DELTA = 0.010, 0.030


def fibonacci(n, shift):
    out = []
    for i in range(n):
        z = 1.0 - 2.0 * (i + 0.5) / n
        r = np.sqrt(1.0 - z * z)
        p = i * np.pi * (3.0 - np.sqrt(5.0)) + shift
        out.append([r * np.cos(p), r * np.sin(p), z])
    return out


def scheme(along_z):
    b, g = [], []
    for k, bv in enumerate(SHELLS):
        dirs = [[0.0, 0.0, 1.0]] * N_DIR if along_z else fibonacci(N_DIR, 0.3 * k)
        for d in dirs:
            b.append(bv)
            g.append(d)
    return np.array(b), np.array(g)


MU = [0.7, 2.2]
CASES = [
    ("ball", gaussian_models.G1Ball(), {"lambda_iso": 2.0e-9}, "ball", {"ball_D": 2.0}),
    ("stick", cylinder_models.C1Stick(), {"mu": MU, "lambda_par": 1.7e-9}, "stick",
     {"stick_theta": MU[0], "stick_phi": MU[1], "stick_lambda_par": 1.7}),
    ("zeppelin", gaussian_models.G2Zeppelin(), {"mu": MU, "lambda_par": 1.9e-9, "lambda_perp": 0.6e-9}, "zeppelin",
     {"zeppelin_theta": MU[0], "zeppelin_phi": MU[1], "zeppelin_lambda_par": 1.9, "zeppelin_lambda_perp": 0.6}),
    ("C2", cylinder_models.C2CylinderStejskalTannerApproximation(), {"mu": MU, "lambda_par": 1.7e-9, "diameter": 8e-6},
     "cylinder_soderman", {"cylinder_soderman_theta": MU[0], "cylinder_soderman_phi": MU[1],
                           "cylinder_soderman_lambda_par": 1.7, "cylinder_soderman_radius": 4.0}),
    ("C3", cylinder_models.C3CylinderCallaghanApproximation(), {"mu": MU, "lambda_par": 1.7e-9, "diameter": 8e-6},
     "cylinder_callaghan", {"cylinder_callaghan_theta": MU[0], "cylinder_callaghan_phi": MU[1],
                            "cylinder_callaghan_lambda_par": 1.7, "cylinder_callaghan_radius": 4.0}),
    # Wide pores: modes still alive at tau = Delta - delta/3, so the series matters.
    ("C3 wide", cylinder_models.C3CylinderCallaghanApproximation(),
     {"mu": MU, "lambda_par": 1.7e-9, "diameter": 16e-6},
     "cylinder_callaghan", {"cylinder_callaghan_theta": MU[0], "cylinder_callaghan_phi": MU[1],
                            "cylinder_callaghan_lambda_par": 1.7, "cylinder_callaghan_radius": 8.0}),
    ("P3 wide", plane_models.P3PlaneCallaghanApproximation(), {"diameter": 15e-6}, "plane_callaghan",
     {"plane_callaghan_theta": 0.0, "plane_callaghan_phi": 0.0, "plane_callaghan_lambda_par": 1.7,
      "plane_callaghan_spacing": 15.0}),
    ("C4", cylinder_models.C4CylinderGaussianPhaseApproximation(), {"mu": MU, "lambda_par": 1.7e-9, "diameter": 8e-6},
     "cylinder_gpd", {"cylinder_gpd_theta": MU[0], "cylinder_gpd_phi": MU[1],
                      "cylinder_gpd_lambda_par": 1.7, "cylinder_gpd_radius": 4.0}),
    ("S2", sphere_models.S2SphereStejskalTannerApproximation(), {"diameter": 10e-6}, "sphere_short_pulse",
     {"sphere_short_pulse_radius": 5.0}),
    ("S4", sphere_models.S4SphereGaussianPhaseApproximation(), {"diameter": 10e-6}, "sphere_gpd",
     {"sphere_gpd_radius": 5.0, "sphere_gpd_D": 1.7}),
    ("P2", plane_models.P2PlaneStejskalTannerApproximation(), {"diameter": 6e-6}, "plane_short_pulse",
     {"plane_short_pulse_theta": 0.0, "plane_short_pulse_phi": 0.0, "plane_short_pulse_lambda_par": 1.7,
      "plane_short_pulse_spacing": 6.0}),
    ("P3", plane_models.P3PlaneCallaghanApproximation(), {"diameter": 6e-6}, "plane_callaghan",
     {"plane_callaghan_theta": 0.0, "plane_callaghan_phi": 0.0, "plane_callaghan_lambda_par": 1.7,
      "plane_callaghan_spacing": 6.0}),
]


def watson(kernel):
    return SD1WatsonDistributed([kernel])


def main():
    out = {
        "generator": "xtask/python/dmipy_reference.py",
        "dmipy": dmipy.__version__ if hasattr(dmipy, "__version__") else "1.0.5",
        "numpy": np.__version__,
        "shells_s_per_mm2": SHELLS,
        "directions_per_shell": N_DIR,
        "delta_s": DELTA,
        "Delta_s": BIG_DELTA,
        "cases": [],
    }
    for name, model, params, ours, x in CASES:
        along_z = name.startswith("P")
        b, g = scheme(along_z)
        acq = acquisition_scheme_from_bvalues(b * 1e6, g, DELTA, BIG_DELTA)
        sig = model(acq, **params)
        out["cases"].append({"dmipy": name, "compartment": ours, "bvals": b.tolist(), "bvecs": g.tolist(),
                             "params": dict(x, S0=1.0), "signal": [float(v) for v in sig]})
    # Watson-dispersed stick and zeppelin (NODDI's kernels).
    b, g = scheme(False)
    acq = acquisition_scheme_from_bvalues(b * 1e6, g, DELTA, BIG_DELTA)
    for kernel, ours, extra in [
        (cylinder_models.C1Stick(), "watson_stick", {"C1Stick_1_lambda_par": 1.7e-9}),
        (gaussian_models.G2Zeppelin(), "watson_zeppelin",
         {"G2Zeppelin_1_lambda_par": 1.7e-9, "G2Zeppelin_1_lambda_perp": 0.5e-9}),
    ]:
        for odi in [0.05, 0.2, 0.5]:
            m = watson(kernel)
            params = {"SD1Watson_1_mu": np.array(MU), "SD1Watson_1_odi": odi}
            params.update(extra)
            sig = m(acq, **params)
            x = {f"{ours}_theta": MU[0], f"{ours}_phi": MU[1], f"{ours}_odi": odi, f"{ours}_lambda_par": 1.7, "S0": 1.0}
            if ours == "watson_zeppelin":
                x[f"{ours}_lambda_perp"] = 0.5
            out["cases"].append({"dmipy": f"SD1Watson({ours}, odi={odi})", "compartment": ours, "bvals": b.tolist(),
                                 "bvecs": g.tolist(), "params": x, "signal": [float(v) for v in sig]})
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
