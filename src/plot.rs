//! Loss curves as pictures: training and validation loss (top) and the learning rate
//! (bottom) against the step, for one run or several overlaid with a legend, read
//! from each run folder's `metrics.jsonl` and drawn with `plotters` as SVG and PNG.
//! Text is set in DejaVu Sans, compiled in (the `dejavu` crate): the same picture on
//! every machine, no system fonts needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Why a picture could not be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlotError {
    #[error("cannot read `{path}`")]
    #[diagnostic(
        code(cllm::plot),
        help("give run folders written by `cllm run` (each has a metrics.jsonl)")
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` has no training rows yet")]
    #[diagnostic(
        code(cllm::plot),
        help("a run writes a row every `train.log_every` steps")
    )]
    Empty { path: PathBuf },
    #[error(
        "every training row of `{path}` is beyond ±{PLOTTED:e} ({clipped} values): nothing to draw"
    )]
    #[diagnostic(
        code(cllm::plot),
        help("the run diverged; its metrics.jsonl holds the numbers")
    )]
    AllClipped { path: PathBuf, clipped: usize },
    #[error("cannot draw `{path}`: {reason}")]
    #[diagnostic(code(cllm::plot))]
    Draw { path: PathBuf, reason: String },
}

/// One run's curves: (step, value) pairs.
#[derive(Clone, Debug, Default)]
pub struct Curves {
    pub name: String,
    pub train: Vec<(f64, f64)>,
    pub val: Vec<(f64, f64)>,
    pub lr: Vec<(f64, f64)>,
    /// Finite values left out because they are beyond ±[`PLOTTED`] (a diverged run's
    /// loss of 1e308 would make an axis no plot can draw).
    pub clipped: usize,
}

/// The largest magnitude of a step or value that is drawn.
pub const PLOTTED: f64 = 1e15;

/// The curves in `run_dir/metrics.jsonl`, named after the folder. Rows that do not
/// parse (a line cut by a crash) are skipped; non-finite values are not drawn.
pub fn read_curves(run_dir: &Path) -> Result<Curves, PlotError> {
    let path = run_dir.join("metrics.jsonl");
    let text = crate::files::read_regular(&path, crate::files::ANY_SIZE).map_err(|source| {
        PlotError::Read {
            path: path.clone(),
            source,
        }
    })?;
    let name = std::fs::canonicalize(run_dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| run_dir.display().to_string());
    let mut curves = Curves {
        name,
        ..Curves::default()
    };
    for line in text.split(|&b| b == b'\n') {
        let Ok(row) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let Some(step) = row["step"].as_f64() else {
            continue;
        };
        let mut push = |into: &mut Vec<(f64, f64)>, key: &str| {
            if let Some(v) = row[key].as_f64().filter(|v| v.is_finite()) {
                if v.abs() > PLOTTED || step.abs() > PLOTTED {
                    curves.clipped += 1;
                } else {
                    into.push((step, v));
                }
            }
        };
        match row["kind"].as_str() {
            Some("eval") => push(&mut curves.val, "val_loss"),
            _ => {
                push(&mut curves.train, "loss");
                push(&mut curves.lr, "lr");
            }
        }
    }
    if curves.train.is_empty() && curves.clipped > 0 {
        let clipped = curves.clipped;
        return Err(PlotError::AllClipped { path, clipped });
    }
    if curves.train.is_empty() {
        return Err(PlotError::Empty { path });
    }
    Ok(curves)
}

/// The loss axis: linear, or logarithmic (which keeps the late part of a run, flattened
/// on a linear axis by the first steps' losses, readable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossAxis {
    Linear,
    Log,
}

/// Draws `runs` to `stem`.svg and `stem`.png with the loss on `axis`; returns the two
/// paths.
pub fn draw(runs: &[Curves], stem: &Path, axis: LossAxis) -> Result<[PathBuf; 2], PlotError> {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    let size = (1000, 720);
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |e: String| PlotError::Draw {
            path: path.clone(),
            reason: e,
        }
    };
    // Drawn in memory, then written as every file cllm writes (a temporary file
    // renamed into place: never through a link planted at the name).
    let mut text = String::new();
    render(
        SVGBackend::with_string(&mut text, size).into_drawing_area(),
        runs,
        axis,
    )
    .map_err(failed(&svg))?;
    let mut pixels = vec![0u8; 3 * size.0 as usize * size.1 as usize];
    render(
        BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area(),
        runs,
        axis,
    )
    .map_err(failed(&png))?;
    let encoded = encode_png(&pixels, size).map_err(failed(&png))?;
    let write = |path: &Path, bytes: &[u8]| {
        crate::files::write_atomic(path, bytes).map_err(|e| failed(path)(e.to_string()))
    };
    write(&svg, text.as_bytes())?;
    write(&png, &encoded)?;
    Ok([svg, png])
}

/// RGB pixels as a PNG file's bytes.
fn encode_png(pixels: &[u8], (width, height): (u32, u32)) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(pixels).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// The run's colour: a fixed palette, so the same run keeps its colour across plots.
fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    PALETTE[i % PALETTE.len()]
}

/// (min, max) of the values, widened when flat.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-12);
    (lo - pad, hi + pad)
}

fn render<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    runs: &[Curves],
    axis: LossAxis,
) -> Result<(), String> {
    // A log axis draws log10(loss) on a linear one, labelled with the loss itself.
    let y = |loss: f64| match axis {
        LossAxis::Linear => loss,
        LossAxis::Log => loss.max(1e-12).log10(),
    };
    let label = |v: &f64| format!("{:.3}", 10f64.powf(*v));
    let at = |&(step, loss): &(f64, f64)| (step, y(loss));
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(500);
    let steps = span(
        runs.iter()
            .flat_map(|r| r.train.iter().chain(&r.val).map(|p| p.0)),
    );
    let steps = (steps.0.max(0.0), steps.1);
    let losses = span(
        runs.iter()
            .flat_map(|r| r.train.iter().chain(&r.val).map(|p| y(p.1))),
    );
    let mut chart = ChartBuilder::on(&top)
        .caption("loss", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(steps.0..steps.1, losses.0..losses.1)
        .map_err(err)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc("step")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(RGBColor(235, 235, 235));
    match axis {
        LossAxis::Linear => mesh.y_desc("loss (nats per token)"),
        LossAxis::Log => mesh
            .y_desc("loss (nats per token, log scale)")
            .y_label_formatter(&label),
    };
    mesh.draw().map_err(err)?;
    for (i, run) in runs.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(run.train.iter().map(at), c.stroke_width(2)))
            .map_err(err)?
            .label(format!("{} train", run.name))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
        if !run.val.is_empty() {
            chart
                .draw_series(DashedLineSeries::new(
                    run.val.iter().map(at),
                    6,
                    4,
                    c.stroke_width(2),
                ))
                .map_err(err)?;
            chart
                .draw_series(run.val.iter().map(|p| Circle::new(at(p), 4, c.filled())))
                .map_err(err)?
                .label(format!("{} validation", run.name))
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;

    // From zero: a constant rate reads as a flat line at its value, not as noise.
    let top_rate = span(runs.iter().flat_map(|r| r.lr.iter().map(|p| p.1))).1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("learning rate", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(steps.0..steps.1, 0.0..top_rate * 1.08)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("lr")
        .y_label_formatter(&|v| match *v {
            0.0 => "0".to_string(),
            v => format!("{v:.1e}"),
        })
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for (i, run) in runs.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(
                run.lr.iter().copied(),
                colour(i).stroke_width(2),
            ))
            .map_err(err)?;
    }
    root.present().map_err(err)
}
