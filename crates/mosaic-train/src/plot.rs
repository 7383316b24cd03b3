//! The run's picture: training loss per step (with each weighted objective of a joint loss, the `loss_<name>`
//! fields of the step records, as its own line) and the validation metric per evaluation, as an SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Result, TrainError};

fn series(history: &[serde_json::Value], kind: &str, key: &str) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter(|r| r["type"] == kind && r.get("final").is_none())
        .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

fn bounds(points: &[(f64, f64)]) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if points.is_empty() {
        return (0.0..1.0, 0.0..1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    (x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
}

/// The `loss_<name>` keys of the training records, in first-seen order (a joint loss's objectives).
fn objective_keys(history: &[serde_json::Value]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for record in history.iter().filter(|r| r["type"] == "train") {
        if let Some(fields) = record.as_object() {
            for key in fields.keys().filter(|k| k.starts_with("loss_")) {
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
    }
    keys
}

const OBJECTIVE_COLORS: [RGBColor; 6] = [
    RGBColor(230, 120, 0),
    RGBColor(0, 150, 70),
    RGBColor(150, 0, 150),
    RGBColor(0, 160, 170),
    RGBColor(120, 120, 120),
    RGBColor(170, 140, 0),
];

/// Writes `path` (atomically): the loss (and its objectives) on the left, `metric` on the right.
pub fn write_training_plot(history: &[serde_json::Value], metric: &str, path: &Path) -> Result<()> {
    let loss = series(history, "train", "loss");
    let values = series(history, "eval", metric);
    let objectives: Vec<(String, Vec<(f64, f64)>)> = objective_keys(history)
        .into_iter()
        .map(|k| {
            let points = series(history, "train", &k);
            (k, points)
        })
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 400)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| TrainError::file(path, format!("cannot draw: {e}"));
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let (left, right) = root.split_horizontally(500);
        for (area, points, title, color) in [
            (&left, &loss, "training loss".to_string(), &BLUE),
            (&right, &values, format!("validation {metric}"), &RED),
        ] {
            let is_loss = std::ptr::eq(points, &loss);
            let mut all = points.clone();
            if is_loss {
                all.extend(objectives.iter().flat_map(|(_, p)| p.iter().copied()));
            }
            let (xs, ys) = bounds(&all);
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(xs, ys)
                .map_err(|e| draw(&e))?;
            chart
                .configure_mesh()
                .x_desc("step")
                .draw()
                .map_err(|e| draw(&e))?;
            let line = chart
                .draw_series(LineSeries::new(points.iter().copied(), color))
                .map_err(|e| draw(&e))?;
            if is_loss && !objectives.is_empty() {
                line.label("total")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
                for (i, (name, series)) in objectives.iter().enumerate() {
                    let c = OBJECTIVE_COLORS[i % OBJECTIVE_COLORS.len()];
                    chart
                        .draw_series(LineSeries::new(series.iter().copied(), c))
                        .map_err(|e| draw(&e))?
                        .label(name.as_str())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| draw(&e))?;
            }
            if points.len() < 30 {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| draw(&e))?;
            }
        }
        root.present().map_err(|e| draw(&e))?;
    }
    mosaic_models::folder::write_atomic(path, svg.as_bytes())?;
    Ok(())
}
