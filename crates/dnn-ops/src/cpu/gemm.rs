//! The one place the CPU backend calls a GEMM kernel (the `gemm` crate; see docs/perf/gemm.md
//! for why it was chosen over `matrixmultiply`).

use crate::error::{OpError, Result};

/// A read-only matrix inside a slice, with row and column strides in elements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A dense row-major `rows × cols` matrix at the start of `data`.
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose (a view, no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn check(&self, what: &str) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
        if last >= self.data.len() {
            return Err(OpError::Graph(format!(
                "gemm: {what} {}x{} with strides ({}, {}) overruns its {} elements",
                self.rows,
                self.cols,
                self.row_stride,
                self.col_stride,
                self.data.len()
            )));
        }
        Ok(())
    }
}

/// `c = a · b` (or `c += a · b` when `accumulate`), `c` dense row-major `m × n`.
///
/// `parallel` lets the kernel use the rayon pool; callers that already parallelise over a batch
/// pass `false`.
pub(crate) fn gemm_into(
    c: &mut [f32],
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    parallel: bool,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || c.len() != m * n {
        return Err(OpError::Graph(format!(
            "gemm: cannot multiply {}x{} by {}x{} into {} elements",
            a.rows,
            a.cols,
            b.rows,
            b.cols,
            c.len()
        )));
    }
    a.check("lhs")?;
    b.check("rhs")?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return Ok(());
    }
    let parallelism = if parallel && m * n * k >= 32 * 32 * 32 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the `gemm` crate's kernel is an unsafe FFI-like boundary taking raw pointers. Every
    // index it touches is in bounds: `c` holds exactly m·n elements (checked above) addressed with
    // row stride n and column stride 1; `a` and `b` were checked by `MatRef::check` so that the
    // last element (rows−1)·rs + (cols−1)·cs lies inside their slices. `c` is borrowed mutably
    // and cannot alias `a` or `b`, which are shared borrows.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}
