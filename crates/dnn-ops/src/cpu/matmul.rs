//! Matrix products on the CPU.

use magma_tensor::Tensor;

use super::CpuBackend;
use super::gemm::{MatMut, MatRef, gemm_into};
use crate::backend::MatmulOps;
use crate::error::{Result, shape_err};

impl CpuBackend {
    /// `(m, k, n)` of `op(a) · op(b)`, with the typed errors of a rank or size mismatch; shared
    /// with the CUDA backend.
    pub(crate) fn check_matmul(
        a: &Tensor,
        b: &Tensor,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<(usize, usize, usize)> {
        let (ar, ac) = a.dims2("matmul lhs")?;
        let (br, bc) = b.dims2("matmul rhs")?;
        let (m, k) = if transpose_a { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if transpose_b { (bc, br) } else { (br, bc) };
        if k != k2 {
            return shape_err(
                "matmul",
                "rhs",
                b.shape(),
                format!("{k} rows (after transpose) to match lhs {:?}", a.shape()),
            );
        }
        Ok((m, k, n))
    }
}

impl MatmulOps for CpuBackend {
    fn matmul(
        &self,
        a: &Tensor,
        b: &Tensor,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Tensor> {
        let (m, _, n) = Self::check_matmul(a, b, transpose_a, transpose_b)?;
        let (ar, ac) = (a.shape()[0], a.shape()[1]);
        let (br, bc) = (b.shape()[0], b.shape()[1]);
        let (a, b) = (a.contiguous()?, b.contiguous()?);
        let mut am = MatRef::row_major(a.host_data()?, ar, ac);
        let mut bm = MatRef::row_major(b.host_data()?, br, bc);
        if transpose_a {
            am = am.t();
        }
        if transpose_b {
            bm = bm.t();
        }
        let mut out = vec![0.0f32; m * n];
        gemm_into(MatMut::row_major(&mut out, m, n), am, bm, false, true)?;
        Ok(Tensor::from_vec(out, &[m, n])?)
    }
}
