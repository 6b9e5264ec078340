//! Rank-2 matrix products through our tiled SGEMM kernel (`cuda/matmul.cu`), which reads either
//! operand transposed in place (no cuBLAS binding exists in the project).

use magma_tensor::Tensor;

use super::CudaBackend;
use super::kernels::{self, Stream};
use crate::backend::MatmulOps;
use crate::cpu::CpuBackend;
use crate::error::Result;

unsafe extern "C" {
    fn mg_matmul(
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        m: i64,
        n: i64,
        k: i64,
        transpose_a: i32,
        transpose_b: i32,
        stream: Stream,
    ) -> i32;
}

impl MatmulOps for CudaBackend {
    fn matmul(
        &self,
        a: &Tensor,
        b: &Tensor,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Tensor> {
        const OP: &str = "matmul";
        let (m, k, n) = CpuBackend::check_matmul(a, b, transpose_a, transpose_b)?;
        if m * n == 0 {
            return self.output(&[m, n]);
        }
        if k == 0 {
            return self.zeros(&[m, n]);
        }
        let (a, b) = (self.input(a)?, self.input(b)?);
        let mut c = self.output(&[m, n])?;
        let c_ptr = c.device_ptr_mut()?;
        // SAFETY: `a` holds `m·k` and `b` `k·n` contiguous values (in the layouts the flags
        // name), `c` `m·n`, all on this device; the kernel writes every element of `c`.
        let status = unsafe {
            mg_matmul(
                a.device_ptr()? as usize as *const f32,
                b.device_ptr()? as usize as *const f32,
                c_ptr as usize as *mut f32,
                m as i64,
                n as i64,
                k as i64,
                i32::from(transpose_a),
                i32::from(transpose_b),
                self.stream(),
            )
        };
        kernels::check(OP, status)?;
        Ok(c)
    }
}
