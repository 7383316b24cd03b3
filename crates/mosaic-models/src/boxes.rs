//! Bounding-box utilities as transformers' DETR code has them (`center_to_corners_format`, `box_area`, `box_iou`,
//! `generalized_box_iou` in `transformers/loss/loss_for_object_detection.py` and `image_transforms.py`).
//!
//! Every function is composed from differentiable candle ops (`narrow`, `maximum`/`minimum`, arithmetic), so the
//! generalized IoU carries gradients back to predicted boxes for DETR's GIoU loss. Candle's `maximum`/`minimum`
//! split the gradient at ties as torch's `max`/`min` do.
//!
//! Box formats: *center* is `(cx, cy, w, h)`, *corners* is `(x0, y0, x1, y1)` with `x0 <= x1`, `y0 <= y1`.

use candle_core::{D, Tensor};

use crate::error::{ModelError, Result};

/// The four coordinates of boxes `[..., 4]` as four tensors `[...]`.
fn unbind4(boxes: &Tensor) -> Result<[Tensor; 4]> {
    let dims = boxes.dims();
    if dims.last() != Some(&4) {
        return Err(ModelError::InvalidInput(format!(
            "boxes must have a last dimension of 4, got shape {dims:?}"
        )));
    }
    let part =
        |i: usize| -> Result<Tensor> { Ok(boxes.narrow(D::Minus1, i, 1)?.squeeze(D::Minus1)?) };
    Ok([part(0)?, part(1)?, part(2)?, part(3)?])
}

/// `(cx, cy, w, h)` → `(x0, y0, x1, y1)`: `boxes: [..., 4] -> [..., 4]`, as transformers'
/// `center_to_corners_format` (`cx − 0.5·w`, `cy − 0.5·h`, `cx + 0.5·w`, `cy + 0.5·h`).
pub fn center_to_corners(boxes: &Tensor) -> Result<Tensor> {
    let [cx, cy, w, h] = unbind4(boxes)?;
    let half_w = w.affine(0.5, 0.0)?;
    let half_h = h.affine(0.5, 0.0)?;
    let corners = [
        (&cx - &half_w)?,
        (&cy - &half_h)?,
        (&cx + &half_w)?,
        (&cy + &half_h)?,
    ];
    Ok(Tensor::stack(&corners, D::Minus1)?)
}

/// `(x0, y0, x1, y1)` → `(cx, cy, w, h)`: `boxes: [..., 4] -> [..., 4]`, as transformers'
/// `corners_to_center_format` (`(x0 + x1)/2`, `(y0 + y1)/2`, `x1 − x0`, `y1 − y0`).
pub fn corners_to_center(boxes: &Tensor) -> Result<Tensor> {
    let [x0, y0, x1, y1] = unbind4(boxes)?;
    let center = [
        (&x0 + &x1)?.affine(0.5, 0.0)?,
        (&y0 + &y1)?.affine(0.5, 0.0)?,
        (&x1 - &x0)?,
        (&y1 - &y0)?,
    ];
    Ok(Tensor::stack(&center, D::Minus1)?)
}

/// Area of corner boxes: `boxes: [..., 4] -> [...]`, `(x1 − x0)·(y1 − y0)`.
pub fn box_area(boxes: &Tensor) -> Result<Tensor> {
    let [x0, y0, x1, y1] = unbind4(boxes)?;
    Ok(((x1 - x0)? * (y1 - y0)?)?)
}

/// Checks that corner boxes are `[N, 4]` and returns `N`.
fn rows(boxes: &Tensor, name: &str) -> Result<usize> {
    match boxes.dims() {
        [n, 4] => Ok(*n),
        dims => Err(ModelError::InvalidInput(format!(
            "{name} must be [N, 4] corner boxes, got shape {dims:?}"
        ))),
    }
}

/// Pairwise element-wise extreme of `a: [N, 2]` and `b: [M, 2]` → `[N, M, 2]` (max when `max`, else min).
fn pairwise_extreme(a: &Tensor, b: &Tensor, max: bool) -> Result<Tensor> {
    let (n, m) = (a.dim(0)?, b.dim(0)?);
    let a = a.unsqueeze(1)?.broadcast_as((n, m, 2))?;
    let b = b.unsqueeze(0)?.broadcast_as((n, m, 2))?;
    Ok(if max { a.maximum(&b)? } else { a.minimum(&b)? })
}

/// Product of the two columns of the clamped extent `(hi − lo).clamp(min = 0)`: `[N, M, 2] -> [N, M]`.
fn clamped_area(lo: &Tensor, hi: &Tensor) -> Result<Tensor> {
    let wh = (hi - lo)?;
    let wh = wh.maximum(&wh.zeros_like()?)?;
    let w = wh.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
    let h = wh.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?;
    Ok((w * h)?)
}

/// Pairwise IoU of corner boxes: `boxes1: [N, 4]`, `boxes2: [M, 4]` → `(iou: [N, M], union: [N, M])`, as
/// transformers' `box_iou` (no validity check; see [`generalized_box_iou`]).
pub fn box_iou(boxes1: &Tensor, boxes2: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, m) = (rows(boxes1, "boxes1")?, rows(boxes2, "boxes2")?);
    let area1 = box_area(boxes1)?;
    let area2 = box_area(boxes2)?;
    let left_top = pairwise_extreme(&boxes1.narrow(1, 0, 2)?, &boxes2.narrow(1, 0, 2)?, true)?;
    let right_bottom = pairwise_extreme(&boxes1.narrow(1, 2, 2)?, &boxes2.narrow(1, 2, 2)?, false)?;
    let inter = clamped_area(&left_top, &right_bottom)?;
    let union = area1
        .unsqueeze(1)?
        .broadcast_as((n, m))?
        .add(&area2.unsqueeze(0)?.broadcast_as((n, m))?)?
        .sub(&inter)?;
    let iou = (inter / &union)?;
    Ok((iou, union))
}

/// Refuses boxes whose corners are not ordered (`x1 >= x0`, `y1 >= y0`), NaN included, as transformers'
/// `generalized_box_iou` does: a degenerate box would otherwise give a silent NaN or infinite loss.
fn check_corners(boxes: &Tensor, name: &str) -> Result<()> {
    let [x0, y0, x1, y1] = unbind4(boxes)?;
    let ok = x1.ge(&x0)?.mul(&y1.ge(&y0)?)?;
    let flags = ok.to_dtype(candle_core::DType::U8)?.to_vec1::<u8>()?;
    if let Some(row) = flags.iter().position(|&f| f == 0) {
        let b = boxes
            .narrow(0, row, 1)?
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        return Err(ModelError::InvalidInput(format!(
            "{name}[{row}] = {b:?} is not a valid (x0, y0, x1, y1) box: needs x1 >= x0 and y1 >= y0 (no NaN)"
        )));
    }
    Ok(())
}

/// Pairwise generalized IoU (<https://giou.stanford.edu/>) of corner boxes: `boxes1: [N, 4]`, `boxes2: [M, 4]` →
/// `[N, M]` in `[-1, 1]`, as transformers' `generalized_box_iou`: `iou − (hull − union) / hull`, with `hull` the
/// area of the smallest box enclosing both. Errors when a box has `x1 < x0`, `y1 < y0` or a NaN coordinate.
pub fn generalized_box_iou(boxes1: &Tensor, boxes2: &Tensor) -> Result<Tensor> {
    rows(boxes1, "boxes1")?;
    rows(boxes2, "boxes2")?;
    check_corners(boxes1, "boxes1")?;
    check_corners(boxes2, "boxes2")?;
    let (iou, union) = box_iou(boxes1, boxes2)?;
    let top_left = pairwise_extreme(&boxes1.narrow(1, 0, 2)?, &boxes2.narrow(1, 0, 2)?, false)?;
    let bottom_right = pairwise_extreme(&boxes1.narrow(1, 2, 2)?, &boxes2.narrow(1, 2, 2)?, true)?;
    let hull = clamped_area(&top_left, &bottom_right)?;
    Ok((iou - ((&hull - union)? / hull)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(rows: &[[f32; 4]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 4), &Device::Cpu).unwrap()
    }

    fn close(a: &Tensor, expected: &[f32]) {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), expected.len());
        for (x, y) in a.iter().zip(expected) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {expected:?}");
        }
    }

    #[test]
    fn center_corners_round_trip() {
        let center = t(&[[0.5, 0.5, 0.2, 0.4], [0.3, 0.6, 0.1, 0.2]]);
        let corners = center_to_corners(&center).unwrap();
        close(&corners, &[0.4, 0.3, 0.6, 0.7, 0.25, 0.5, 0.35, 0.7]);
        close(
            &corners_to_center(&corners).unwrap(),
            &[0.5, 0.5, 0.2, 0.4, 0.3, 0.6, 0.1, 0.2],
        );
        // Higher ranks work on the last dimension.
        let batched = center.unsqueeze(0).unwrap();
        assert_eq!(center_to_corners(&batched).unwrap().dims(), &[1, 2, 4]);
        assert!(
            center_to_corners(
                &Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn area_iou_and_giou_by_hand() {
        // a = [0,0,2,2] (area 4), b = [1,1,3,3] (area 4), c = [4,0,5,1] (area 1).
        let a = t(&[[0.0, 0.0, 2.0, 2.0]]);
        let bc = t(&[[1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 5.0, 1.0]]);
        close(&box_area(&bc).unwrap(), &[4.0, 1.0]);
        let (iou, union) = box_iou(&a, &bc).unwrap();
        assert_eq!(iou.dims(), &[1, 2]);
        // a∩b = 1, union 7; a∩c = 0, union 5.
        close(&iou, &[1.0 / 7.0, 0.0]);
        close(&union, &[7.0, 5.0]);
        // Hulls: a,b → [0,0,3,3] = 9; a,c → [0,0,5,2] = 10.
        let giou = generalized_box_iou(&a, &bc).unwrap();
        close(&giou, &[1.0 / 7.0 - 2.0 / 9.0, -0.5]);
        // A box with itself has GIoU 1; b,c: inter 0, union 5, hull [1,0,5,3] = 12.
        let self_giou = generalized_box_iou(&bc, &bc).unwrap();
        close(&self_giou, &[1.0, -7.0 / 12.0, -7.0 / 12.0, 1.0]);
    }

    #[test]
    fn giou_refuses_bad_boxes() {
        let good = t(&[[0.0, 0.0, 1.0, 1.0]]);
        let flipped = t(&[[0.0, 0.0, 1.0, 1.0], [0.5, 0.0, 0.2, 1.0]]);
        let err = generalized_box_iou(&flipped, &good)
            .unwrap_err()
            .to_string();
        assert!(err.contains("boxes1[1]"), "{err}");
        let nan = t(&[[0.0, f32::NAN, 1.0, 1.0]]);
        let err = generalized_box_iou(&good, &nan).unwrap_err().to_string();
        assert!(err.contains("boxes2[0]") && err.contains("NaN"), "{err}");
        assert!(box_iou(&t(&[[0.0, 0.0, 1.0, 1.0]]).unsqueeze(0).unwrap(), &good).is_err());
    }

    #[test]
    fn giou_carries_gradients() {
        // d/dx1 of GIoU(a, b) with a = [0,0,x1,2], b = [1,1,3,3] at x1 = 2: inter = (x1−1)·1, union = 2·x1 + 4 − inter,
        // hull = 3·3 (x1 < 3). GIoU = inter/union − (9 − union)/9; d inter = 1, d union = 1, so
        // d GIoU = (union − inter)/union² + 1/9 = 6/49 + 1/9.
        let a = Var::from_tensor(&t(&[[0.0, 0.0, 2.0, 2.0]])).unwrap();
        let b = t(&[[1.0, 1.0, 3.0, 3.0]]);
        let giou = generalized_box_iou(a.as_tensor(), &b).unwrap();
        let grads = giou.sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(a.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((g[2] - (6.0 / 49.0 + 1.0 / 9.0)).abs() < 1e-6, "{g:?}");
    }
}
