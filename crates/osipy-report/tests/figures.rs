//! Figures checked by content: decoded pixels, not only that a file exists.

use ndarray::Array3;
use osipy_core::QualityCode;
use osipy_io::{Plot, Trace};
use osipy_report::{
    histogram, line_plot, map_montage, quality_color, quality_montage, render, viridis, Figure, MapImage,
    ReportData, NO_VALUE, OUTSIDE,
};

/// Decoded RGB pixels and size.
fn decode(f: &Figure) -> (Vec<u8>, u32, u32) {
    let mut dec = png::Decoder::new(std::io::Cursor::new(&f.png))
        .read_info()
        .unwrap();
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    let info = dec.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (buf, info.width, info.height)
}

fn px(buf: &[u8], w: u32, x: u32, y: u32) -> [u8; 3] {
    let k = ((y * w + x) * 3) as usize;
    [buf[k], buf[k + 1], buf[k + 2]]
}

/// A 12x10x3 map rising along x, with a hole (NaN) and a mask that leaves
/// out the last column.
fn ramp() -> (Array3<f64>, Array3<bool>) {
    let mut v = Array3::from_shape_fn((12, 10, 3), |(x, _, _)| x as f64 / 11.0);
    v[(5, 5, 1)] = f64::NAN;
    let mask = Array3::from_shape_fn((12, 10, 3), |(x, _, _)| x < 11);
    (v, mask)
}

#[test]
fn a_map_montage_shows_the_values_in_colour_with_a_colour_bar() {
    let (v, mask) = ramp();
    let f = map_montage("ramp (1/s)", "1/s", &v, &mask, (0.0, 1.0), &[]).unwrap();
    let (buf, w, h) = decode(&f);
    assert_eq!((w, h), (f.width, f.height));
    assert_eq!(f.tiles.len(), 3, "one tile per slice");

    // Colour bar: the top is the high end of viridis, the bottom the low
    // end, and it changes colour all along.
    let (bx, by, bw, bh) = f.colorbar.unwrap();
    let mid = bx + bw / 2;
    assert_eq!(px(&buf, w, mid, by), viridis(1.0));
    assert_eq!(px(&buf, w, mid, by + bh - 1), viridis(0.0));
    let distinct: std::collections::BTreeSet<[u8; 3]> = (by..by + bh).map(|y| px(&buf, w, mid, y)).collect();
    assert!(distinct.len() > 50, "colour bar has {} colours", distinct.len());

    // Tiles: voxel (x, y) is drawn at column x, row ny-1-y, scaled.
    let (tx, ty, tw, th) = f.tiles[1];
    let scale = tw / 12;
    assert_eq!(th / 10, scale);
    let at = |x: u32, y: u32| {
        px(
            &buf,
            w,
            tx + x * scale + scale / 2,
            ty + (9 - y) * scale + scale / 2,
        )
    };
    assert_eq!(at(0, 0), viridis(0.0));
    assert_eq!(at(10, 3), viridis(10.0 / 11.0));
    assert_ne!(at(3, 3), at(8, 3), "the map varies along x, so must the pixels");
    assert_eq!(at(11, 3), OUTSIDE, "outside the mask");
    assert_eq!(at(5, 5), NO_VALUE, "in the mask without a value");
}

#[test]
fn markers_are_drawn_on_their_slice_only() {
    let (v, mask) = ramp();
    let plain = decode(&map_montage("m", "1/s", &v, &mask, (0.0, 1.0), &[]).unwrap()).0;
    let f = map_montage("m", "1/s", &v, &mask, (0.0, 1.0), &[([3, 4, 2], "1".into())]).unwrap();
    let (marked, w, _) = decode(&f);
    let changed: Vec<usize> = (0..plain.len() / 3)
        .filter(|i| plain[i * 3..i * 3 + 3] != marked[i * 3..i * 3 + 3])
        .collect();
    assert!(!changed.is_empty());
    let (tx, _, tw, _) = f.tiles[2];
    for i in changed {
        let x = (i as u32) % w;
        assert!(
            x >= tx && x < tx + tw + 20,
            "pixel changed at x = {x}, outside slice 2's tile"
        );
    }
}

#[test]
fn the_quality_montage_colours_each_reason_and_lists_it_in_a_legend() {
    let mut q = Array3::from_elem((8, 8, 1), QualityCode::Converged.code());
    q[(2, 2, 0)] = QualityCode::LowR2.code();
    q[(7, 7, 0)] = QualityCode::NotFitted.code();
    let mask = q.mapv(|c| c != 0);
    let f = quality_montage(&q, &mask).unwrap();
    let (buf, w, h) = decode(&f);
    let (tx, ty, tw, _) = f.tiles[0];
    let s = tw / 8;
    let at = |x: u32, y: u32| px(&buf, w, tx + x * s + s / 2, ty + (7 - y) * s + s / 2);
    assert_eq!(at(0, 0), quality_color(QualityCode::Converged));
    assert_eq!(at(2, 2), quality_color(QualityCode::LowR2));
    assert_eq!(at(7, 7), OUTSIDE);
    // The legend (right of the tiles) holds a swatch of each code present.
    let legend: std::collections::BTreeSet<[u8; 3]> = (0..h)
        .flat_map(|y| (tx + tw + 8..w).map(move |x| (x, y)))
        .map(|(x, y)| px(&buf, w, x, y))
        .collect();
    for c in [QualityCode::Converged, QualityCode::LowR2] {
        assert!(legend.contains(&quality_color(c)), "legend lacks {}", c.name());
    }
    assert!(
        !legend.contains(&quality_color(QualityCode::Singular)),
        "no singular voxel, no swatch"
    );
}

#[test]
fn line_plots_draw_measured_points_and_the_fit_in_their_colours() {
    let x: Vec<f64> = (0..30).map(f64::from).collect();
    let plot = Plot {
        title: "Signal at voxel (1, 2, 3)".into(),
        x_label: "time (s)".into(),
        y_label: "signal (a.u.)".into(),
        traces: vec![
            Trace {
                label: "measured".into(),
                x: x.clone(),
                y: x.iter().map(|t| (t / 5.0).sin()).collect(),
                points: true,
            },
            Trace {
                label: "fit".into(),
                x: x.clone(),
                y: x.iter().map(|t| (t / 5.0).sin() * 0.9).collect(),
                points: false,
            },
        ],
        voxels: vec![[1, 2, 3]],
    };
    let f = line_plot(&plot).unwrap();
    let (buf, _, _) = decode(&f);
    let count = |c: [u8; 3]| buf.chunks(3).filter(|p| *p == c).count();
    assert!(count([31, 119, 180]) > 100, "measured points (blue) missing");
    assert!(count([214, 39, 40]) > 100, "fit line (red) missing");
}

#[test]
fn histograms_draw_bars_coloured_across_the_range() {
    let values: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
    let f = histogram("h", "mm²/s", &values, (0.1, 0.9)).unwrap();
    let (buf, w, h) = decode(&f);
    assert_eq!((w, h), (640, 300));
    // Bars are viridis-coloured: the low and high ends both appear.
    let count = |c: [u8; 3]| buf.chunks(3).filter(|p| *p == c).count();
    assert!(count(viridis(0.5 / 40.0)) > 50 && count(viridis(39.5 / 40.0)) > 50);
}

/// A map of values in 1/s named (and shown as) `name`.
fn map_image(name: &str, values: ndarray::Array3<f64>) -> MapImage<'static> {
    MapImage {
        name: name.into(),
        symbol: name.into(),
        unit: "1/s".into(),
        values: std::borrow::Cow::Owned(values),
    }
}

#[test]
fn the_page_embeds_every_figure_and_loads_nothing_from_outside() {
    let (v, mask) = ramp();
    let quality = mask.mapv(|m| if m { 1u8 } else { 0 });
    let summary = serde_json::json!({
        "software": "osipy test",
        "shape": [12, 10, 3, 5],
        "voxels_total": 360, "voxels_in_mask": 330,
        "quality_counts": {"converged": 330},
        "timings": [["read", 0.1], ["fit", 0.2]],
        "inputs": {"dynamic": "/data/<odd> & name.nii.gz"},
        "config": {"modality": "dce", "output": {"report_ranges": {"ramp": [0.2, 0.8]}}},
        "plots": [{"title": "AIF", "x_label": "t", "y_label": "c", "voxels": [[1, 1, 1]],
                   "traces": [{"label": "AIF", "x": [0, 1, 2], "y": [0, 5, 1], "points": false}]}],
    });
    let data = ReportData {
        summary,
        maps: vec![map_image("ramp", v)],
        quality,
    };
    let r = render(&data, 2).unwrap();
    let names: Vec<&str> = r.figures.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "map_ramp.png",
            "hist_ramp.png",
            "quality.png",
            "curve_1.png",
            "locations.png"
        ]
    );
    assert_eq!(
        r.html.matches("<img src=\"data:image/png;base64,").count(),
        names.len()
    );
    assert!(r.html.contains("Content-Security-Policy") && r.html.contains("default-src 'none'"));
    assert!(!r.html.contains("http://") && !r.html.contains("https://"));
    // Text from the summary is escaped, the configured range is used.
    assert!(r.html.contains("/data/&lt;odd&gt; &amp; name.nii.gz"));
    assert_eq!(data.ranges().get("ramp"), Some(&(0.2, 0.8)));
    // Median and IQR of the ramp in the mask (x = 0..10 over 11, NaN left out).
    assert!(
        r.html
            .contains("<td>ramp</td><td>1/s</td><td class=\"n\">329</td>"),
        "stats row"
    );
}

/// The figures are drawn on several threads: the report is the same, byte
/// for byte and in the same order, for any thread count.
#[test]
fn the_report_is_the_same_for_any_thread_count() {
    let (v, mask) = ramp();
    let quality = mask.mapv(|m| if m { 1u8 } else { 0 });
    let plot = |title: &str, voxel: [usize; 3]| {
        serde_json::json!({"title": title, "x_label": "t", "y_label": "c", "voxels": [voxel],
            "traces": [{"label": "measured", "x": [0, 1, 2], "y": [0, 5, 1], "points": true}]})
    };
    let summary = serde_json::json!({
        "software": "osipy test",
        "shape": [12, 10, 3, 5],
        "voxels_total": 360, "voxels_in_mask": 330,
        "quality_counts": {"converged": 330},
        "timings": [["read", 0.1], ["fit", 0.2]],
        "inputs": {},
        "config": {"modality": "dce", "output": {}},
        "plots": [plot("first", [1, 1, 1]), plot("second", [2, 3, 0])],
    });
    let data = ReportData {
        summary,
        maps: vec![map_image("up", v.clone()), map_image("down", v.mapv(|x| 1.0 - x))],
        quality,
    };
    let one = render(&data, 1).unwrap();
    let names: Vec<&str> = one.figures.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "map_up.png",
            "hist_up.png",
            "map_down.png",
            "hist_down.png",
            "quality.png",
            "curve_1.png",
            "curve_2.png",
            "locations.png"
        ]
    );
    for threads in [2, 3, 8] {
        let r = render(&data, threads).unwrap();
        assert_eq!(r.html, one.html, "{threads} threads");
        assert_eq!(r.figures.len(), one.figures.len());
        for ((n, f), (n1, f1)) in r.figures.iter().zip(&one.figures) {
            assert_eq!(n, n1);
            assert!(f.png == f1.png, "{n} on {threads} threads");
        }
    }
}
