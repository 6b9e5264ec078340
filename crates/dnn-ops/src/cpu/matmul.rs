//! Matrix products on the CPU.

use magma_tensor::Tensor;

use super::CpuBackend;
use super::gemm::{MatRef, gemm_into};
use crate::backend::MatmulOps;
use crate::error::{Result, shape_err};

impl MatmulOps for CpuBackend {
    fn matmul(
        &self,
        a: &Tensor,
        b: &Tensor,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Tensor> {
        let (ar, ac) = a.dims2("matmul lhs")?;
        let (br, bc) = b.dims2("matmul rhs")?;
        let (a, b) = (a.contiguous()?, b.contiguous()?);
        let mut am = MatRef::row_major(a.host_data()?, ar, ac);
        let mut bm = MatRef::row_major(b.host_data()?, br, bc);
        if transpose_a {
            am = am.t();
        }
        if transpose_b {
            bm = bm.t();
        }
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
        let mut out = vec![0.0f32; m * n];
        gemm_into(&mut out, am, bm, false, true)?;
        Ok(Tensor::from_vec(out, &[m, n])?)
    }
}
