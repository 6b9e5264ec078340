//! Classification metrics computed from outputs and integer targets.

use dnn_ops::Tensor;

use crate::error::Result;

/// `(correct, counted)` of the argmax over dimension 1 of `output` (`[N, C, ...]`) against integer
/// `target` (`[N, ...]`); `None` when the target is not a label tensor of that shape (regression).
/// Elements equal to `ignore_index` are not counted.
pub fn count_correct(
    output: &Tensor,
    target: &Tensor,
    ignore_index: Option<i64>,
) -> Result<Option<(usize, usize)>> {
    let shape = output.shape();
    if shape.len() < 2 {
        return Ok(None);
    }
    let mut label_shape = vec![shape[0]];
    label_shape.extend_from_slice(&shape[2..]);
    if target.shape() != label_shape.as_slice() {
        return Ok(None);
    }
    let (c, inner) = (shape[1], shape[2..].iter().product::<usize>());
    let out = output.contiguous()?;
    let o = out.host_data()?;
    let t = target.to_vec()?;
    let (mut correct, mut counted) = (0, 0);
    for (i, &label) in t.iter().enumerate() {
        if ignore_index == Some(label as i64) {
            continue;
        }
        let (n, p) = (i / inner.max(1), i % inner.max(1));
        let mut best = 0;
        for ch in 1..c {
            if o[(n * c + ch) * inner + p] > o[(n * c + best) * inner + p] {
                best = ch;
            }
        }
        counted += 1;
        correct += usize::from(best as f32 == label);
    }
    Ok(Some((correct, counted)))
}
