//! The run's picture: training loss per step and the validation metric per evaluation, as an SVG.

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

/// Writes `path` (atomically): loss on the left, `metric` on the right.
pub fn write_training_plot(history: &[serde_json::Value], metric: &str, path: &Path) -> Result<()> {
    let loss = series(history, "train", "loss");
    let values = series(history, "eval", metric);
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
            let (xs, ys) = bounds(points);
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
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color))
                .map_err(|e| draw(&e))?;
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
