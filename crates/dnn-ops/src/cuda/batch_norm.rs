//! Batch normalisation over `(N, spatial)` per channel (`CUDNN_BATCHNORM_SPATIAL`); a tensor
//! `[N, C, ...]` is described to cuDNN as `[N, C, inner, 1]`, the per-channel vectors as
//! `[1, C, 1, 1]`.
//!
//! - training: `cudnnBatchNormalizationForwardTraining` with `exponentialAverageFactor =
//!   momentum`; cuDNN updates the running variance with the unbiased batch variance and saves the
//!   batch mean and `1/sqrt(var + eps)` of the biased one, as the CPU does;
//! - evaluation: `cudnnBatchNormalizationForwardInference`; the returned `saved` is the running
//!   mean and `1/sqrt(running_var + eps)` (our kernel);
//! - backward with batch statistics: `cudnnBatchNormalizationBackward` from the saved mean and
//!   inverse deviation; with frozen statistics: our kernels of `cuda/batch_norm.cu`.
//!
//! An NHWC activation (bf16 or fp32: the bf16 and NHWC fp32 modes) is normalised as it is, with
//! fp32 parameters and statistics and an NHWC result (and input gradient) of the same type: in
//! training and backward by our kernels of `cuda/bn_nhwc.cu` (cuDNN's legacy NHWC batch norm ran
//! at ~1/100 of memory speed: U-Net base 64 trained at 76 img/s with it, 106 with its persistent
//! mode), in evaluation by `cudnnBatchNormalizationForwardInference` with NHWC descriptors.

use cudnn_sys as sys;
use magma_tensor::{DType, Tensor};

use super::CudaBackend;
use super::cudnn::{DataLayout, ONE, TensorDesc, ZERO, check, dptr, scale};
use super::kernels::{self, ActDst, ActSrc, Stream, nhwc_launchers};
use crate::attrs::BatchNormAttrs;
use crate::backend::{
    BatchNormSaved, FusedOps, NormOps, batch_norm_then_relu, relu_then_batch_norm_backward,
};
use crate::cpu::CpuBackend;
use crate::error::Result;
use magma_tensor::cuda::CudaBuffer;

nhwc_launchers!(bn_train_nhwc = mg_bn_nhwc_train_bf16 | mg_bn_nhwc_train_f32(
    x: ActSrc, y: ActDst, m: i64, c: i64, eps: f32, momentum: f32, gamma: *const f32,
    beta: *const f32, running_mean: *mut f32, running_var: *mut f32, save_mean: *mut f32,
    save_inv_std: *mut f32, scale: *mut f32, shift: *mut f32, partial_a: *mut f64,
    partial_b: *mut f64, relu: i32, stream: Stream,
));
nhwc_launchers!(bn_backward_nhwc = mg_bn_nhwc_backward_bf16 | mg_bn_nhwc_backward_f32(
    x: ActSrc, dy: ActSrc, relu_y: ActSrc, mask_scale: *const f32, mask_shift: *const f32,
    gamma: *const f32, mean: *const f32, inv_std: *const f32, dx: ActDst, dgamma: *mut f32,
    dbeta: *mut f32, m: i64, c: i64, k1: *mut f32, k2: *mut f32, k3: *mut f32,
    partial_a: *mut f64, partial_b: *mut f64, stream: Stream,
));

unsafe extern "C" {
    fn mg_bn_nhwc_partials(m: i64, c: i64) -> i64;
    fn mg_bn_inv_std(var: *const f32, inv_std: *mut f32, c: i64, eps: f32, stream: Stream) -> i32;
    fn mg_bn_frozen_backward(
        x: *const f32,
        dy: *const f32,
        mean: *const f32,
        inv_std: *const f32,
        gamma: *const f32,
        dx: *mut f32,
        dgamma: *mut f32,
        dbeta: *mut f32,
        outer: i64,
        c: i64,
        inner: i64,
        stream: Stream,
    ) -> i32;
}

const SPATIAL: sys::cudnnBatchNormMode_t = sys::cudnnBatchNormMode_t::CUDNN_BATCHNORM_SPATIAL;

/// The epsilon handed to the backward call: cuDNN reads the saved inverse deviation instead, so
/// the value only has to be valid.
const BACKWARD_EPS: f64 = 1e-5;

/// The data descriptor `[outer, c, inner, 1]` and the per-channel descriptor `[1, c, 1, 1]`.
fn descriptors(
    lib: &'static sys::CudnnLibrary,
    op: &'static str,
    (outer, c, inner): (usize, usize, usize),
) -> Result<(TensorDesc, TensorDesc)> {
    Ok((
        TensorDesc::nchw(lib, op, &[outer, c, inner, 1])?,
        TensorDesc::nchw(lib, op, &[1, c, 1, 1])?,
    ))
}

/// The NHWC data descriptor of `x` (of element type `dtype`) and the fp32 per-channel
/// descriptor.
fn nhwc_descriptors(
    lib: &'static sys::CudnnLibrary,
    op: &'static str,
    x: &Tensor,
    dtype: DType,
) -> Result<(TensorDesc, TensorDesc)> {
    let (n, c, h, w) = x.dims4(op)?;
    Ok((
        TensorDesc::with_layout(lib, op, &[n, c, h, w], DataLayout::nhwc_of(dtype))?,
        TensorDesc::nchw(lib, op, &[1, c, 1, 1])?,
    ))
}

fn ptr(t: &Tensor) -> Result<*const f32> {
    Ok(t.device_ptr()? as usize as *const f32)
}

impl CudaBackend {
    /// `1/sqrt(var + eps)` of a device vector of `c` values.
    fn inv_std(&self, op: &'static str, var: &Tensor, eps: f32) -> Result<Tensor> {
        let c = var.numel();
        let mut out = self.output(&[c])?;
        let out_ptr = out.device_ptr_mut()?;
        // SAFETY: `var` and `out` hold `c` contiguous values on this device.
        let status = unsafe {
            mg_bn_inv_std(
                ptr(var)?,
                out_ptr as usize as *mut f32,
                c as i64,
                eps,
                self.stream(),
            )
        };
        kernels::check(op, status)?;
        Ok(out)
    }
}

impl CudaBackend {
    /// Training-mode batch norm of an NHWC activation of `dtype` (our kernels): an NHWC result of
    /// the same type, fp32 statistics; with `relu`, the result of a ReLU applied after it (fused).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_train_nhwc(
        &self,
        dtype: DType,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        attrs: &BatchNormAttrs,
        relu: bool,
    ) -> Result<(Tensor, BatchNormSaved)> {
        const OP: &str = "batch_norm_train";
        let (n, c, h, w) = x.dims4(OP)?;
        let m = n * h * w;
        let y = self.nhwc_output([n, c, h, w], dtype)?;
        let (gamma, beta) = (self.input(gamma)?, self.input(beta)?);
        let rm = self.in_place(running_mean)?;
        let rv = self.in_place(running_var)?;
        let (mut mean, mut inv_std) = (self.output(&[c])?, self.output(&[c])?);
        let (mut scale_t, mut shift_t) = (self.output(&[c])?, self.output(&[c])?);
        let (partial_a, partial_b) = self.bn_partials(m, c)?;
        let train = bn_train_nhwc(dtype);
        // SAFETY: `x` and `y` hold m·c values of `dtype` (NHWC = [m][c]) on this device; the
        // eight per-channel vectors hold `c` fp32 values each (running statistics owned alone,
        // updated in place); the partial buffers hold `mg_bn_nhwc_partials(m, c)` fp64 values
        // each.
        let status = unsafe {
            train(
                x.channels_last_ptr()? as usize as ActSrc,
                y.channels_last_ptr()? as usize as ActDst,
                m as i64,
                c as i64,
                attrs.eps,
                attrs.momentum,
                ptr(&gamma)?,
                ptr(&beta)?,
                rm as usize as *mut f32,
                rv as usize as *mut f32,
                mean.device_ptr_mut()? as usize as *mut f32,
                inv_std.device_ptr_mut()? as usize as *mut f32,
                scale_t.device_ptr_mut()? as usize as *mut f32,
                shift_t.device_ptr_mut()? as usize as *mut f32,
                partial_a.device_ptr() as usize as *mut f64,
                partial_b.device_ptr() as usize as *mut f64,
                i32::from(relu),
                self.stream(),
            )
        };
        kernels::check(OP, status)?;
        // With the ReLU fused, its backward recomputes the mask from x with these coefficients
        // instead of reading the output (one operand less: the TF32 U-Net step's two backward
        // passes 3.40 -> 2.62 ms; bf16 on the H100 1004 -> 1032 img/s).
        let relu_mask = relu.then_some((scale_t, shift_t));
        Ok((
            y,
            BatchNormSaved {
                mean,
                inv_std,
                relu_mask,
            },
        ))
    }

    /// The two fp64 partial-sum buffers of the NHWC batch-norm kernels for an `[m][c]` input.
    fn bn_partials(&self, m: usize, c: usize) -> Result<(CudaBuffer, CudaBuffer)> {
        // SAFETY: a pure function of its two integers.
        let len = unsafe { mg_bn_nhwc_partials(m as i64, c as i64) }.max(1) as usize;
        Ok((self.device.alloc(2 * len)?, self.device.alloc(2 * len)?))
    }

    /// The batch-statistics backward of an NHWC activation of `dtype` (our kernels): `dy` as
    /// such too (converted when it is not), `dx` likewise, the parameter gradients fp32.
    /// `relu_y`: the (NHWC) output of a ReLU fused after the norm, `dy` being its gradient.
    fn batch_norm_backward_nhwc(
        &self,
        dtype: DType,
        x: &Tensor,
        dy: &Tensor,
        relu_y: Option<&Tensor>,
        gamma: &Tensor,
        saved: &BatchNormSaved,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        const OP: &str = "batch_norm_backward";
        let (n, c, h, w) = x.dims4(OP)?;
        let m = n * h * w;
        let dy = self.to_nhwc(OP, dy, dtype)?;
        let gamma = self.input(gamma)?;
        let (mean, inv_std) = (self.input(&saved.mean)?, self.input(&saved.inv_std)?);
        let dx = self.nhwc_output([n, c, h, w], dtype)?;
        let (mut dgamma, mut dbeta) = (self.output(&[c])?, self.output(&[c])?);
        let (k1, k2, k3) = (self.output(&[c])?, self.output(&[c])?, self.output(&[c])?);
        let (partial_a, partial_b) = self.bn_partials(m, c)?;
        let backward = bn_backward_nhwc(dtype);
        // A fused ReLU's mask: recomputed from x with the forward's coefficients when the
        // forward kept them (one operand less to read), else read from its output.
        let mask = match (relu_y, &saved.relu_mask) {
            // The kernels round the recomputed value to the element type before the test, so
            // the mask is the output's (bf16 rounds tiny positive values to zero).
            (Some(_), Some((scale, shift))) => {
                for v in [scale, shift] {
                    if v.shape() != [c] {
                        return crate::error::shape_err(
                            OP,
                            "saved ReLU mask coefficients",
                            v.shape(),
                            format!("[{c}]"),
                        );
                    }
                }
                Some((self.input(scale)?, self.input(shift)?))
            }
            _ => None,
        };
        let relu_y = if mask.is_some() { None } else { relu_y };
        let (mask_scale, mask_shift) = match &mask {
            Some((scale, shift)) => (ptr(scale)?, ptr(shift)?),
            None => (std::ptr::null(), std::ptr::null()),
        };
        // SAFETY: `x`, `dy`, `dx` (and `relu_y` when given) hold m·c values of `dtype` (NHWC =
        // [m][c]) on this device; the per-channel vectors hold `c` fp32 values each (`k1..k3`,
        // `dgamma`, `dbeta` written); the partial buffers hold `mg_bn_nhwc_partials(m, c)` fp64
        // values each.
        let status = unsafe {
            backward(
                x.channels_last_ptr()? as usize as ActSrc,
                dy.channels_last_ptr()? as usize as ActSrc,
                relu_y.map_or(Ok(0), |y| y.channels_last_ptr())? as usize as ActSrc,
                mask_scale,
                mask_shift,
                ptr(&gamma)?,
                ptr(&mean)?,
                ptr(&inv_std)?,
                dx.channels_last_ptr()? as usize as ActDst,
                dgamma.device_ptr_mut()? as usize as *mut f32,
                dbeta.device_ptr_mut()? as usize as *mut f32,
                m as i64,
                c as i64,
                k1.device_ptr()? as usize as *mut f32,
                k2.device_ptr()? as usize as *mut f32,
                k3.device_ptr()? as usize as *mut f32,
                partial_a.device_ptr() as usize as *mut f64,
                partial_b.device_ptr() as usize as *mut f64,
                self.stream(),
            )
        };
        kernels::check(OP, status)?;
        Ok((dx, dgamma, dbeta))
    }
}

/// The CPU's checks of a training-mode batch norm's operands; `(outer, C, inner)`.
fn train_dims(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
) -> Result<(usize, usize, usize)> {
    CpuBackend::check_batch_norm(
        "batch_norm_train",
        x,
        [gamma, beta, running_mean, running_var],
        true,
    )
}

impl NormOps for CudaBackend {
    fn batch_norm_train(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        attrs: &BatchNormAttrs,
    ) -> Result<(Tensor, BatchNormSaved)> {
        const OP: &str = "batch_norm_train";
        let dims = train_dims(x, gamma, beta, running_mean, running_var)?;
        let c = dims.1;
        if let Some(dtype) = self.nhwc_dtype(x)
            && x.numel() > 0
        {
            return self.batch_norm_train_nhwc(
                dtype,
                x,
                gamma,
                beta,
                running_mean,
                running_var,
                attrs,
                false,
            );
        }
        let x = self.input(x)?;
        let mut y = self.output(x.shape())?;
        let mut mean = self.output(&[c])?;
        let mut inv_std = self.output(&[c])?;
        if x.numel() == 0 {
            // No channel (the check guarantees values in every channel otherwise).
            return Ok((
                y,
                BatchNormSaved {
                    mean,
                    inv_std,
                    relu_mask: None,
                },
            ));
        }
        let (gamma, beta) = (self.input(gamma)?, self.input(beta)?);
        let rm = self.in_place(running_mean)?;
        let rv = self.in_place(running_var)?;
        let (x_ptr, y_ptr) = (x.device_ptr()?, y.device_ptr_mut()?);
        let (mean_ptr, inv_ptr) = (mean.device_ptr_mut()?, inv_std.device_ptr_mut()?);
        let state = self.lock_state()?;
        let lib = state.handle.lib;
        let (x_desc, c_desc) = descriptors(lib, OP, dims)?;
        // SAFETY: the descriptors match the contiguous device buffers: `x` (read) and `y`
        // (written) of `[outer, c, inner]`, `gamma`/`beta` (read), the running statistics
        // (updated in place, owned alone) and the saved mean / inverse deviation (written) of
        // `c` values each.
        check(lib, OP, "cudnnBatchNormalizationForwardTraining", unsafe {
            lib.cudnnBatchNormalizationForwardTraining(
                state.handle.raw,
                SPATIAL,
                scale(&ONE),
                scale(&ZERO),
                x_desc.raw,
                dptr(x_ptr),
                x_desc.raw,
                dptr(y_ptr),
                c_desc.raw,
                dptr(gamma.device_ptr()?),
                dptr(beta.device_ptr()?),
                f64::from(attrs.momentum),
                dptr(rm),
                dptr(rv),
                f64::from(attrs.eps),
                dptr(mean_ptr),
                dptr(inv_ptr),
            )
        })?;
        Ok((
            y,
            BatchNormSaved {
                mean,
                inv_std,
                relu_mask: None,
            },
        ))
    }

    fn batch_norm_eval(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        attrs: &BatchNormAttrs,
    ) -> Result<(Tensor, BatchNormSaved)> {
        const OP: &str = "batch_norm_eval";
        let dims =
            CpuBackend::check_batch_norm(OP, x, [gamma, beta, running_mean, running_var], false)?;
        let nhwc = self.nhwc_dtype(x).filter(|_| x.numel() > 0);
        let x = if nhwc.is_some() {
            x.clone()
        } else {
            self.input(x)?
        };
        let (rm, rv) = (self.input(running_mean)?, self.input(running_var)?);
        let inv_std = self.inv_std(OP, &rv, attrs.eps)?;
        let mut y = if let Some(dtype) = nhwc {
            self.nhwc_output(x.shape4(OP)?, dtype)?
        } else {
            self.output(x.shape())?
        };
        if x.numel() > 0 {
            let (gamma, beta) = (self.input(gamma)?, self.input(beta)?);
            let (x_ptr, y_ptr) = if nhwc.is_some() {
                (x.channels_last_ptr()?, y.channels_last_ptr()?)
            } else {
                (x.device_ptr()?, y.device_ptr_mut()?)
            };
            let state = self.lock_state()?;
            let lib = state.handle.lib;
            let (x_desc, c_desc) = if let Some(dtype) = nhwc {
                nhwc_descriptors(lib, OP, &x, dtype)?
            } else {
                descriptors(lib, OP, dims)?
            };
            // SAFETY: the descriptors match the contiguous device buffers: `x` (read) and `y`
            // (written) of `[outer, c, inner]`, and the four per-channel vectors (read).
            check(lib, OP, "cudnnBatchNormalizationForwardInference", unsafe {
                lib.cudnnBatchNormalizationForwardInference(
                    state.handle.raw,
                    SPATIAL,
                    scale(&ONE),
                    scale(&ZERO),
                    x_desc.raw,
                    dptr(x_ptr),
                    x_desc.raw,
                    dptr(y_ptr),
                    c_desc.raw,
                    dptr(gamma.device_ptr()?),
                    dptr(beta.device_ptr()?),
                    dptr(rm.device_ptr()?),
                    dptr(rv.device_ptr()?),
                    f64::from(attrs.eps),
                )
            })?;
        }
        // `rm` may share the running mean's storage; an in-place update of the running mean
        // copies it first (copy-on-write), so `saved.mean` keeps these values.
        Ok((
            y,
            BatchNormSaved {
                mean: rm,
                inv_std,
                relu_mask: None,
            },
        ))
    }

    fn batch_norm_backward(
        &self,
        x: &Tensor,
        dy: &Tensor,
        gamma: &Tensor,
        saved: &BatchNormSaved,
        batch_statistics: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        const OP: &str = "batch_norm_backward";
        let dims = CpuBackend::check_batch_norm_backward(x, dy, gamma, saved)?;
        let (outer, c, inner) = dims;
        if batch_statistics
            && let Some(dtype) = self.nhwc_dtype(x)
            && x.numel() > 0
        {
            return self.batch_norm_backward_nhwc(dtype, x, dy, None, gamma, saved);
        }
        let (x, dy) = (self.input(x)?, self.input(dy)?);
        if x.numel() == 0 {
            return Ok((
                self.output(x.shape())?,
                self.zeros(&[c])?,
                self.zeros(&[c])?,
            ));
        }
        let gamma = self.input(gamma)?;
        let (mean, inv_std) = (self.input(&saved.mean)?, self.input(&saved.inv_std)?);
        let mut dx = self.output(x.shape())?;
        let mut dgamma = self.output(&[c])?;
        let mut dbeta = self.output(&[c])?;
        let (dx_ptr, dg_ptr, db_ptr) = (
            dx.device_ptr_mut()?,
            dgamma.device_ptr_mut()?,
            dbeta.device_ptr_mut()?,
        );
        if batch_statistics {
            let state = self.lock_state()?;
            let lib = state.handle.lib;
            let (x_desc, c_desc) = descriptors(lib, OP, dims)?;
            // SAFETY: the descriptors match the contiguous device buffers: `x`, `dy` (read) and
            // `dx` (written) of `[outer, c, inner]`; `gamma`, the saved mean and inverse
            // deviation (read) and `dgamma`, `dbeta` (written) of `c` values.
            check(lib, OP, "cudnnBatchNormalizationBackward", unsafe {
                lib.cudnnBatchNormalizationBackward(
                    state.handle.raw,
                    SPATIAL,
                    scale(&ONE),
                    scale(&ZERO),
                    scale(&ONE),
                    scale(&ZERO),
                    x_desc.raw,
                    dptr(x.device_ptr()?),
                    x_desc.raw,
                    dptr(dy.device_ptr()?),
                    x_desc.raw,
                    dptr(dx_ptr),
                    c_desc.raw,
                    dptr(gamma.device_ptr()?),
                    dptr(dg_ptr),
                    dptr(db_ptr),
                    BACKWARD_EPS,
                    dptr(mean.device_ptr()?),
                    dptr(inv_std.device_ptr()?),
                )
            })?;
        } else {
            // SAFETY: `x`, `dy` and `dx` hold `outer·c·inner` contiguous values, the five
            // per-channel vectors `c` values, all on this device.
            let status = unsafe {
                mg_bn_frozen_backward(
                    ptr(&x)?,
                    ptr(&dy)?,
                    ptr(&mean)?,
                    ptr(&inv_std)?,
                    ptr(&gamma)?,
                    dx_ptr as usize as *mut f32,
                    dg_ptr as usize as *mut f32,
                    db_ptr as usize as *mut f32,
                    outer as i64,
                    c as i64,
                    inner as i64,
                    self.stream(),
                )
            };
            kernels::check(OP, status)?;
        }
        Ok((dx, dgamma, dbeta))
    }
}

/// Batch norm + ReLU of an NHWC activation (bf16 or fp32) in one pass each way (the ReLU applied by the
/// norm's own kernels); anything else composes the two ops.
impl FusedOps for CudaBackend {
    fn batch_norm_relu_train(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        attrs: &BatchNormAttrs,
    ) -> Result<(Tensor, BatchNormSaved)> {
        if let Some(dtype) = self.nhwc_dtype(x)
            && x.numel() > 0
        {
            train_dims(x, gamma, beta, running_mean, running_var)?;
            return self.batch_norm_train_nhwc(
                dtype,
                x,
                gamma,
                beta,
                running_mean,
                running_var,
                attrs,
                true,
            );
        }
        batch_norm_then_relu(self, x, gamma, beta, running_mean, running_var, attrs)
    }

    fn batch_norm_relu_backward(
        &self,
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        gamma: &Tensor,
        saved: &BatchNormSaved,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        if let Some(dtype) = self.nhwc_dtype(x)
            && self.nhwc_dtype(y) == Some(dtype)
            && x.numel() > 0
            && x.shape() == y.shape()
        {
            CpuBackend::check_batch_norm_backward(x, dy, gamma, saved)?;
            return self.batch_norm_backward_nhwc(dtype, x, dy, Some(y), gamma, saved);
        }
        relu_then_batch_norm_backward(self, x, y, dy, gamma, saved)
    }
}
