//! The report page: one HTML file, figures embedded as `data:` URIs, a
//! Content-Security-Policy that allows nothing from outside the file, and
//! a few lines of script that record whether every image decoded (the
//! browser test reads it).

use crate::figure::{fmt_num, quality_color, Figure};
use crate::{MapImage, ReportData};
use base64::Engine;
use osipy_core::{QualityCode, Result};
use osipy_io::Plot;
use std::fmt::Write;

/// Summary statistics of one map within the mask.
pub(crate) struct MapStats {
    name: String,
    unit: String,
    n: usize,
    median: f64,
    q1: f64,
    q3: f64,
    range: (f64, f64),
    configured: bool,
}

impl MapStats {
    /// `range` is the colour range of the figures, `configured` whether it
    /// comes from `output.report_ranges`.
    /// `n` values in the mask with the [`crate::map_percentiles`] `pct`.
    pub(crate) fn new(
        m: &MapImage<'_>,
        n: usize,
        pct: &[f64; 5],
        range: (f64, f64),
        configured: bool,
    ) -> MapStats {
        MapStats {
            name: m.name.clone(),
            unit: m.unit.clone(),
            n,
            median: pct[2],
            q1: pct[1],
            q3: pct[3],
            range,
            configured,
        }
    }
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn img(out: &mut String, f: &Figure, alt: &str) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(&f.png);
    let _ = write!(
        out,
        "<img src=\"data:image/png;base64,{b64}\" alt=\"{}\" width=\"{}\" height=\"{}\">",
        esc(alt),
        f.width,
        f.height
    );
}

fn figure<'a>(figures: &'a [(String, Figure)], name: &str) -> Option<&'a Figure> {
    figures.iter().find(|(n, _)| n == name).map(|(_, f)| f)
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), fmt_num),
        other => other.to_string(),
    }
}

/// The config as TOML (as the user writes it), JSON where it has no TOML
/// form.
fn settings_text(config: &serde_json::Value) -> String {
    fn strip_nulls(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => serde_json::Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), strip_nulls(v)))
                    .collect(),
            ),
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(strip_nulls).collect()),
            other => other.clone(),
        }
    }
    let clean = strip_nulls(config);
    toml::to_string(&clean).unwrap_or_else(|_| serde_json::to_string_pretty(config).unwrap_or_default())
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1500px;color:#222;padding:0 16px}\
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 9px;text-align:left}\
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.sw{display:inline-block;width:12px;height:12px;border:1px solid #555;margin-right:6px;vertical-align:middle}\
.row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.grid{display:flex;flex-wrap:wrap;gap:24px}\
figure{margin:8px 0}img{max-width:100%;height:auto;border:1px solid #eee}pre{background:#f7f7f7;padding:10px;overflow:auto}\
.muted{color:#666}.warn{color:#a40}";

/// Records in `data-images` on `<body>` how many images decoded (and the
/// alt texts of any that did not), and in `data-network` how many resources
/// the page fetched from anywhere but a `data:` URI (and which).
const SCRIPT: &str = "window.addEventListener('load',function(){var im=document.images,bad=[];\
for(var i=0;i<im.length;i++){if(!im[i].complete||im[i].naturalWidth===0){bad.push(im[i].alt);}}\
document.body.setAttribute('data-images',(im.length-bad.length)+'/'+im.length+(bad.length?' broken: '+bad.join('; '):''));\
var net=performance.getEntriesByType('resource').filter(function(r){return r.name.indexOf('data:')!==0;});\
document.body.setAttribute('data-network',net.length+(net.length?' '+net.map(function(r){return r.name;}).join(' '):''));});";

pub(crate) fn page(
    data: &ReportData<'_>,
    stats: &[MapStats],
    plots: &[Plot],
    figures: &[(String, Figure)],
) -> Result<String> {
    let s = &data.summary;
    let modality = s
        .pointer("/config/modality")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    let software = s.get("software").and_then(|v| v.as_str()).unwrap_or("osipy");
    let shape: Vec<String> = s
        .get("shape")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().map(json_text).collect())
        .unwrap_or_default();
    let total = s.get("voxels_total").and_then(|v| v.as_u64()).unwrap_or(0);
    let in_mask = s.get("voxels_in_mask").and_then(|v| v.as_u64()).unwrap_or(0);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>osipy report: {m}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>\n\
<h1>osipy report: {m}</h1><p class=\"muted\">{sw} &middot; grid {grid} &middot; {in_mask} of {total} voxels in the mask</p>\n",
        m = esc(&modality.to_uppercase()),
        sw = esc(software),
        grid = esc(&shape.join(" x ")),
    );

    // At a glance: quality and parameter summaries.
    h.push_str("<h2>At a glance</h2><div class=\"grid\"><div><h3>Voxels per quality status (in the mask)</h3><table><tr><th>status</th><th>voxels</th><th>share</th></tr>");
    let counts = s.get("quality_counts").and_then(|v| v.as_object());
    for q in QualityCode::ALL {
        let Some(n) = counts.and_then(|c| c.get(q.name())).and_then(|v| v.as_u64()) else {
            continue;
        };
        let c = quality_color(q);
        let share = if in_mask > 0 {
            100.0 * n as f64 / in_mask as f64
        } else {
            0.0
        };
        let _ = write!(
            h,
            "<tr><td><span class=\"sw\" style=\"background:rgb({},{},{})\"></span>{}{}</td><td class=\"n\">{n}</td><td class=\"n\">{share:.1} %</td></tr>",
            c[0],
            c[1],
            c[2],
            q.name(),
            if q.is_valid() { "" } else { " <span class=\"warn\">(no value)</span>" }
        );
    }
    h.push_str("</table></div><div><h3>Parameters (valid voxels in the mask)</h3><table><tr><th>map</th><th>unit</th><th>voxels</th><th>median</th><th>IQR (25th-75th)</th></tr>");
    for m in stats {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} to {}</td></tr>",
            esc(&m.name),
            esc(&m.unit),
            m.n,
            fmt_num(m.median),
            fmt_num(m.q1),
            fmt_num(m.q3)
        );
    }
    h.push_str("</table></div></div>\n");

    h.push_str("<h2>Maps</h2><p class=\"muted\">Axial slices, x to the right and y up; black: outside the mask; grey: in the mask without a value (see the quality map).</p>\n");
    for m in stats {
        let _ = write!(
            h,
            "<h3>{}</h3><p class=\"muted\">Colours span {} to {} {} ({}).</p><div class=\"row\">",
            esc(&m.name),
            fmt_num(m.range.0),
            fmt_num(m.range.1),
            esc(&m.unit),
            if m.configured {
                "set in output.report_ranges"
            } else {
                "2nd to 98th percentile in the mask; output.report_ranges sets it"
            }
        );
        for (prefix, what) in [("map_", "map"), ("hist_", "histogram")] {
            if let Some(f) = figure(figures, &format!("{prefix}{}.png", m.name)) {
                h.push_str("<figure>");
                img(&mut h, f, &format!("{} {what}", m.name));
                h.push_str("</figure>");
            }
        }
        h.push_str("</div>\n");
    }
    if let Some(f) = figure(figures, "quality.png") {
        h.push_str("<h2>Quality</h2><figure>");
        img(&mut h, f, "quality map");
        h.push_str("</figure>\n");
    }

    if !plots.is_empty() {
        h.push_str("<h2>Curves</h2><div class=\"grid\">");
        for (i, p) in plots.iter().enumerate() {
            if let Some(f) = figure(figures, &format!("curve_{}.png", i + 1)) {
                let _ = write!(h, "<figure><figcaption>{}. {}</figcaption>", i + 1, esc(&p.title));
                img(&mut h, f, &p.title);
                h.push_str("</figure>");
            }
        }
        h.push_str("</div>\n");
        if let Some(f) = figure(figures, "locations.png") {
            h.push_str("<figure><figcaption>Where the plotted voxels are: numbered crosses are the voxels of the curve figures, crosses without a number the voxels the AIF was detected from.</figcaption>");
            img(&mut h, f, "locations of the plotted voxels");
            h.push_str("</figure>\n");
        }
    }

    h.push_str(
        "<h2>Run</h2><div class=\"grid\"><div><h3>Timings</h3><table><tr><th>stage</th><th>seconds</th></tr>",
    );
    for t in s.get("timings").and_then(|v| v.as_array()).into_iter().flatten() {
        if let Some([name, secs]) = t.as_array().map(Vec::as_slice) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{:.3}</td></tr>",
                esc(&json_text(name)),
                secs.as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    h.push_str("</table></div><div><h3>Inputs</h3><table><tr><th>role</th><th>file or value</th></tr>");
    for (role, v) in s.get("inputs").and_then(|v| v.as_object()).into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(role),
            esc(&json_text(v))
        );
    }
    h.push_str("</table></div></div>\n<h3>Settings</h3><pre>");
    h.push_str(&esc(&settings_text(
        s.get("config").unwrap_or(&serde_json::Value::Null),
    )));
    h.push_str("</pre>\n</body></html>\n");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn settings_read_as_toml_without_nulls() {
        let c = serde_json::json!({"modality": "dce", "pipeline": {"model": "tofts", "aif_delay": null}});
        let t = settings_text(&c);
        assert!(
            t.contains("modality = \"dce\"") && t.contains("model = \"tofts\""),
            "{t}"
        );
        assert!(!t.contains("aif_delay"), "{t}");
    }
}
