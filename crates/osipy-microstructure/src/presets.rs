//! Preset models (registry `microstructure_models`), each a
//! [`ModelSpec`] a user could also write by hand in the config.
//!
//! | preset | compartments | links | reference |
//! |---|---|---|---|
//! | `ball_stick` | ball, stick | none | Behrens et al. 2003 |
//! | `noddi_watson` | ball, watson_stick, watson_zeppelin | D_iso = 3e-3, lambda_par = 1.7e-3 mm^2/s, zeppelin shares the stick's direction, ODI and lambda_par, tortuous lambda_perp | Zhang et al. 2012 |
//! | `smt` | stick, zeppelin (spherical mean) | shared lambda_par, tortuous lambda_perp | Kaden et al. 2016 |
//! | `sandi` | stick, sphere_gpd, ball (spherical mean) | soma D = 3e-3 mm^2/s; bounds R_s 1-12 um, D_e 0.25-3e-3 mm^2/s | Palombo et al. 2020 |
//! | `dti` | tensor | none; eigenvalues sorted after the fit | Basser et al. 1994 |
//! | `custom` | `pipeline.compartments` | `pipeline.links` | |

use crate::model::{LinkValue, ModelSpec};
use osipy_core::{Extension, KindInfo};

/// Registry entry of a preset: the function that builds its spec.
#[derive(Debug, Clone, Copy)]
pub struct Preset(pub fn() -> ModelSpec);

impl Extension for Preset {
    const KIND: KindInfo = KindInfo {
        id: "microstructure_models",
        label: "microstructure model",
        config_key: "microstructure: pipeline.model",
    };
}

fn spec(compartments: &[&str], links: &[(&str, LinkValue)], spherical_mean: bool) -> ModelSpec {
    ModelSpec {
        compartments: compartments.iter().map(|c| c.to_string()).collect(),
        links: links.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        spherical_mean,
        aliases: Vec::new(),
        bounds: Vec::new(),
        starts: 0,
    }
}

fn text(s: &str) -> LinkValue {
    LinkValue::Text(s.into())
}

/// Ball and stick (Behrens et al. 2003). One LM start: the grid finds the
/// fibre and the fit has one minimum near it.
pub fn ball_stick() -> ModelSpec {
    let mut s = spec(&["ball", "stick"], &[], false);
    s.starts = 1;
    s
}

/// NODDI with a Watson distribution (Zhang et al. 2012): free water at
/// 3e-3 mm^2/s, intrinsic diffusivity 1.7e-3 mm^2/s, tortuous extra-neurite
/// space. Maps `ODI`, `NDI` (v_ic) and `FWF` (v_iso) besides the parameters.
pub fn noddi_watson() -> ModelSpec {
    let mut s = spec(
        &["ball", "watson_stick", "watson_zeppelin"],
        &[
            ("ball.D", LinkValue::Number(3.0e-3)),
            ("watson_stick.lambda_par", LinkValue::Number(1.7e-3)),
            ("watson_zeppelin.lambda_par", text("watson_stick.lambda_par")),
            ("watson_zeppelin.theta", text("watson_stick.theta")),
            ("watson_zeppelin.phi", text("watson_stick.phi")),
            ("watson_zeppelin.odi", text("watson_stick.odi")),
            ("watson_zeppelin.lambda_perp", text("tortuous(watson_stick)")),
        ],
        false,
    );
    s.aliases = vec![
        ("ODI", "watson_stick_odi".into()),
        ("NDI", "watson_stick_partial_fraction".into()),
        ("FWF", "ball_fraction".into()),
    ];
    // One LM start: on 10,000 phantom voxels (`cargo xtask bench-compare
    // microstructure`) three starts gave the same median errors at a third
    // of the speed.
    s.starts = 1;
    s
}

/// Multi-compartment spherical mean technique (Kaden et al. 2016): intra-
/// and extra-neurite diffusion with a shared lambda_par and tortuosity.
pub fn smt() -> ModelSpec {
    spec(
        &["stick", "zeppelin"],
        &[
            ("zeppelin.lambda_par", text("stick.lambda_par")),
            ("zeppelin.lambda_perp", text("tortuous(stick)")),
        ],
        true,
    )
}

/// SANDI (Palombo et al. 2020): neurites (sticks), somas (GPD spheres with
/// D = 3e-3 mm^2/s) and extra-cellular space (ball), spherical mean.
pub fn sandi() -> ModelSpec {
    let mut s = spec(
        &["stick", "sphere_gpd", "ball"],
        &[("sphere_gpd.D", LinkValue::Number(3.0e-3))],
        true,
    );
    s.aliases = vec![
        ("fneurite", "stick_fraction".into()),
        ("fsoma", "sphere_gpd_fraction".into()),
        ("fextra", "ball_fraction".into()),
        ("Rsoma", "sphere_gpd_radius".into()),
        ("Din", "stick_lambda_par".into()),
        ("De", "ball_D".into()),
    ];
    // A GPD sphere at one timing decays mono-exponentially in b, like a
    // ball: without these bounds soma and extra-cellular space can swap.
    // Palombo et al. 2020's ranges.
    s.bounds = vec![("sphere_gpd_radius", [1.0, 12.0]), ("ball_D", [0.25e-3, 3.0e-3])];
    // Soma and extra-cellular space trade places in a second minimum: one
    // start stops there in about 1 voxel in 10.
    s.starts = 5;
    s
}

/// Diffusion tensor imaging (Basser et al. 1994): one full tensor fitted
/// by non-linear least squares; maps `FA`, `MD`, `AD`, `RD` and the
/// principal direction (`tensor_direction`).
pub fn dti() -> ModelSpec {
    let mut s = spec(&["tensor"], &[], false);
    s.aliases = vec![
        ("FA", "tensor_fa".into()),
        ("MD", "tensor_md".into()),
        ("AD", "tensor_ad".into()),
        ("RD", "tensor_rd".into()),
    ];
    s.starts = 1;
    s
}

/// An empty spec: `pipeline.compartments` and `pipeline.links` say it all.
pub fn custom() -> ModelSpec {
    ModelSpec::default()
}

/// The presets this crate registers: (name, description, entry).
pub const PRESETS: &[(&str, &str, Preset)] = &[
    (
        "noddi_watson",
        "NODDI: free water, Watson-dispersed sticks and tortuous zeppelins (Zhang 2012); maps ODI, NDI, FWF",
        Preset(noddi_watson),
    ),
    ("ball_stick", "ball and stick (Behrens 2003)", Preset(ball_stick)),
    (
        "smt",
        "multi-compartment spherical mean technique (Kaden 2016); needs several shells",
        Preset(smt),
    ),
    (
        "sandi",
        "soma and neurite density imaging (Palombo 2020), spherical mean; needs delta, Delta",
        Preset(sandi),
    ),
    (
        "dti",
        "diffusion tensor (Basser 1994), non-linear least squares; maps FA, MD, AD, RD and the principal direction",
        Preset(dti),
    ),
    (
        "custom",
        "your own composition: pipeline.compartments and pipeline.links",
        Preset(custom),
    ),
];
