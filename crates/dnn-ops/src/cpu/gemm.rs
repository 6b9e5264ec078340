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

    /// A `rows × cols` matrix at the start of `data` whose element (i, j) is
    /// `data[i·row_stride + j·col_stride]` (a block of a larger matrix).
    pub(crate) fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
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
        check_extent(
            what,
            [self.rows, self.cols],
            [self.row_stride, self.col_stride],
            self.data.len(),
        )
    }
}

/// A writable matrix inside a slice, with row and column strides in elements. Distinct (i, j)
/// must address distinct elements (no zero or overlapping strides), which the constructors
/// guarantee.
#[derive(Debug)]
pub(crate) struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatMut<'a> {
    /// A dense row-major `rows × cols` matrix at the start of `data`.
    pub(crate) fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// Columns `first..first + cols` of a row-major matrix with `row_len` columns per row.
    pub(crate) fn columns(
        data: &'a mut [f32],
        rows: usize,
        row_len: usize,
        first: usize,
        cols: usize,
    ) -> Self {
        let start = if rows == 0 || cols == 0 {
            0
        } else {
            first.min(data.len())
        };
        let data = &mut data[start..];
        Self {
            data,
            rows,
            cols,
            row_stride: row_len,
            col_stride: 1,
        }
    }

    fn check(&self) -> Result<()> {
        // Distinct (i, j) must address distinct elements: rows laid out one after another
        // (row stride ≥ a row's extent) or columns one after another, no zero stride along a
        // dimension longer than 1.
        let (r, c) = (self.rows, self.cols);
        let (rs, cs) = (self.row_stride, self.col_stride);
        let distinct = r == 0
            || c == 0
            || ((r == 1 || rs > 0)
                && (c == 1 || cs > 0)
                && (r == 1 || c == 1 || rs > (c - 1) * cs || cs > (r - 1) * rs));
        if !distinct {
            return Err(OpError::Graph(format!(
                "gemm: output {r}x{c} with strides ({rs}, {cs}) addresses one element twice"
            )));
        }
        check_extent(
            "output",
            [self.rows, self.cols],
            [self.row_stride, self.col_stride],
            self.data.len(),
        )
    }
}

/// Whether the last element of a `dims` matrix with `strides` lies inside `len` elements.
fn check_extent(what: &str, dims: [usize; 2], strides: [usize; 2], len: usize) -> Result<()> {
    if dims[0] == 0 || dims[1] == 0 {
        return Ok(());
    }
    let last = (dims[0] - 1) * strides[0] + (dims[1] - 1) * strides[1];
    if last >= len {
        return Err(OpError::Graph(format!(
            "gemm: {what} {}x{} with strides ({}, {}) overruns its {len} elements",
            dims[0], dims[1], strides[0], strides[1]
        )));
    }
    Ok(())
}

/// `c = a · b` (or `c += a · b` when `accumulate`).
///
/// `parallel` lets the kernel use the rayon pool; callers that already parallelise over a batch
/// pass `false`.
pub(crate) fn gemm_into(
    c: MatMut<'_>,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    parallel: bool,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || c.rows != m || c.cols != n {
        return Err(OpError::Graph(format!(
            "gemm: cannot multiply {}x{} by {}x{} into {}x{}",
            a.rows, a.cols, b.rows, b.cols, c.rows, c.cols
        )));
    }
    a.check("lhs")?;
    b.check("rhs")?;
    c.check()?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c.data[i * c.row_stride + j * c.col_stride] = 0.0;
                }
            }
        }
        return Ok(());
    }
    let parallelism = if parallel && m * n * k >= 32 * 32 * 32 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the `gemm` crate's kernel is an unsafe FFI-like boundary taking raw pointers. Every
    // index it touches is in bounds: `MatRef::check` and `MatMut::check` above verified that the
    // last element (rows−1)·rs + (cols−1)·cs of `a`, `b` and `c` lies inside their slices, and
    // `MatMut::check` that distinct elements of `c` do not overlap. `c` is borrowed mutably and
    // cannot alias `a` or `b`, which are shared borrows.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.data.as_mut_ptr(),
            c.col_stride as isize,
            c.row_stride as isize,
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

#[cfg(test)]
mod tests {
    use super::MatMut;

    /// Outputs whose elements are distinct pass; any layout addressing one element twice is
    /// refused before the kernel could write it from two threads.
    #[test]
    fn outputs_that_alias_are_refused() {
        let mut data = vec![0.0f32; 64];
        let mut check = |rows, cols, rs, cs| {
            MatMut {
                data: &mut data,
                rows,
                cols,
                row_stride: rs,
                col_stride: cs,
            }
            .check()
            .is_ok()
        };
        assert!(check(4, 5, 5, 1), "row-major");
        assert!(check(4, 5, 1, 4), "column-major");
        assert!(check(3, 4, 16, 1), "columns of a wider matrix");
        assert!(
            check(1, 7, 0, 1) && check(7, 1, 1, 0),
            "a single row or column"
        );
        assert!(check(0, 5, 0, 0), "empty");
        assert!(!check(4, 5, 4, 1), "rows overlapping");
        assert!(!check(4, 1, 0, 1), "zero row stride");
        assert!(!check(1, 4, 1, 0), "zero column stride");
        assert!(!check(3, 3, 2, 2), "interleaved");
    }
}
