//! Convolutions through cuDNN, and the transposed convolution bound by hand from the same three
//! primitives (as on the CPU): its forward pass is `cudnnConvolutionBackwardData` with the weight
//! `[in, out, kh, kw]` read as the filter `[K = in, C = out]`, its input gradient is
//! `cudnnConvolutionForward`, and its weight gradient is `cudnnConvolutionBackwardFilter` with
//! the input and the output gradient swapped.
//!
//! In bf16 mode and in the NHWC fp32 layout (TF32 by default) the activations are NHWC tensors
//! of the layout's type: a forward pass or data gradient of an NHWC activation writes an NHWC
//! result (the bias added by an NHWC kernel), filters are converted to KRSC once per pass
//! ([`ConvOps::conv_weight`]), and any other operand is converted by one tiled transpose
//! (`cuda/layout.cu`); filter gradients come back to NCHW fp32. cuDNN accumulates in fp32.
//!
//! The algorithm of every problem (kind, shapes, attributes, math, layout) is searched once with
//! `cudnnFind*AlgorithmEx` and cached in [`AlgoCache`]: the fastest successful algorithm,
//! among the deterministic ones when [`CudaBackend::with_deterministic`] or
//! `MAGMA_CUDA_DETERMINISTIC=1` asks for them (PyTorch's `cudnn.deterministic = True`; by
//! default any algorithm, as PyTorch's default). The search runs with a temporary workspace of
//! at most
//! [`SEARCH_WORKSPACE_CAP`]; each call then takes the chosen algorithm's workspace from the
//! device's cache and gives it back once queued.

use std::collections::{HashMap, HashSet};

use cudnn_sys as sys;
use magma_tensor::Tensor;

use super::CudaBackend;
use super::cudnn::{ConvDesc, DataLayout, FilterDesc, ONE, TensorDesc, ZERO, check, dptr, scale};
use crate::Precision;
use crate::attrs::{Conv2dAttrs, ConvTranspose2dAttrs};
use crate::backend::ConvOps;
use crate::cpu::CpuBackend;
use crate::error::{OpError, Result};
use magma_tensor::cuda::CudaBuffer;

/// The largest workspace an algorithm search may use (1 GiB).
pub(crate) const SEARCH_WORKSPACE_CAP: usize = 1 << 30;

/// Which of cuDNN's three convolution primitives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ConvKind {
    Forward,
    BackwardData,
    BackwardFilter,
}

/// What identifies a convolution problem (the output shape follows from these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConvKey {
    kind: ConvKind,
    x: [usize; 4],
    w: [usize; 4],
    attrs: Conv2dAttrs,
    precision: Precision,
    layout: DataLayout,
}

/// The algorithm chosen for one problem.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvAlgo {
    algo: u32,
    math: sys::cudnnMathType_t,
    workspace: usize,
}

/// The algorithms chosen so far, with counts for tests and diagnostics.
#[derive(Debug, Default)]
pub(crate) struct AlgoCache {
    chosen: HashMap<ConvKey, ConvAlgo>,
    /// NHWC problems cuDNN has no algorithm for; they run in NCHW fp32 instead.
    nhwc_refused: HashSet<ConvKey>,
    searches: usize,
    hits: usize,
}

/// Counts of the convolution algorithm cache ([`CudaBackend::conv_algo_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvAlgoStats {
    /// Problems with a chosen algorithm.
    pub cached: usize,
    /// Algorithm searches run (one per new problem).
    pub searches: usize,
    /// Convolutions that reused a cached algorithm.
    pub hits: usize,
}

impl CudaBackend {
    /// How many convolution problems have a cached algorithm, how many searches ran and how many
    /// calls reused a cached choice.
    pub fn conv_algo_stats(&self) -> Result<ConvAlgoStats> {
        let state = self.lock_state()?;
        let cache = &state.conv_algos;
        Ok(ConvAlgoStats {
            cached: cache.chosen.len(),
            searches: cache.searches,
            hits: cache.hits,
        })
    }
}

/// One result of an algorithm search, whatever the primitive.
#[derive(Debug, Clone, Copy)]
struct Perf {
    algo: u32,
    status: sys::cudnnStatus_t,
    memory: usize,
    deterministic: bool,
    math: sys::cudnnMathType_t,
}

/// The descriptors of one problem: input `x`, filter `w`, output `y` and the convolution.
struct Problem {
    x: TensorDesc,
    w: FilterDesc,
    y: TensorDesc,
    conv: ConvDesc,
}

impl Problem {
    fn new(
        lib: &'static sys::CudnnLibrary,
        op: &'static str,
        shapes: ([usize; 4], [usize; 4], [usize; 4]),
        attrs: &Conv2dAttrs,
        math: sys::cudnnMathType_t,
        layout: DataLayout,
    ) -> Result<Self> {
        let (x, w, y) = shapes;
        Ok(Self {
            x: TensorDesc::with_layout(lib, op, &x, layout)?,
            w: FilterDesc::new(lib, op, &w, layout)?,
            y: TensorDesc::with_layout(lib, op, &y, layout)?,
            conv: ConvDesc::new(lib, op, attrs.padding, attrs.stride, attrs.dilation, math)?,
        })
    }
}

/// Device addresses of one call: the two operands and the output, in the primitive's order
/// (forward: `x`, `w` → `y`; backward data: `dy`, `w` → `dx`; backward filter: `x`, `dy` → `dw`).
#[derive(Debug, Clone, Copy)]
struct Operands {
    a: u64,
    b: u64,
    out: u64,
}

fn call_name(kind: ConvKind) -> (&'static str, &'static str) {
    match kind {
        ConvKind::Forward => (
            "cudnnFindConvolutionForwardAlgorithmEx",
            "cudnnConvolutionForward",
        ),
        ConvKind::BackwardData => (
            "cudnnFindConvolutionBackwardDataAlgorithmEx",
            "cudnnConvolutionBackwardData",
        ),
        ConvKind::BackwardFilter => (
            "cudnnFindConvolutionBackwardFilterAlgorithmEx",
            "cudnnConvolutionBackwardFilter",
        ),
    }
}

/// How many algorithms cuDNN has for `kind`.
fn algo_count(
    lib: &'static sys::CudnnLibrary,
    handle: sys::cudnnHandle_t,
    op: &'static str,
    kind: ConvKind,
) -> Result<usize> {
    let mut count = 0i32;
    match kind {
        ConvKind::Forward => check(
            lib,
            op,
            "cudnnGetConvolutionForwardAlgorithmMaxCount",
            // SAFETY: `handle` is live; writes one int into a valid local.
            unsafe { lib.cudnnGetConvolutionForwardAlgorithmMaxCount(handle, &mut count) },
        )?,
        ConvKind::BackwardData => check(
            lib,
            op,
            "cudnnGetConvolutionBackwardDataAlgorithmMaxCount",
            // SAFETY: `handle` is live; writes one int into a valid local.
            unsafe { lib.cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle, &mut count) },
        )?,
        ConvKind::BackwardFilter => check(
            lib,
            op,
            "cudnnGetConvolutionBackwardFilterAlgorithmMaxCount",
            // SAFETY: `handle` is live; writes one int into a valid local.
            unsafe { lib.cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(handle, &mut count) },
        )?,
    }
    Ok(count.max(0) as usize)
}

/// The workspace algorithm `algo` needs for the problem, or `None` where it does not apply.
fn workspace_size(
    lib: &'static sys::CudnnLibrary,
    handle: sys::cudnnHandle_t,
    kind: ConvKind,
    p: &Problem,
    algo: u32,
) -> Option<usize> {
    let mut bytes = 0usize;
    let status = match kind {
        // SAFETY: every descriptor is live and describes the same problem; writes one size.
        ConvKind::Forward => unsafe {
            lib.cudnnGetConvolutionForwardWorkspaceSize(
                handle,
                p.x.raw,
                p.w.raw,
                p.conv.raw,
                p.y.raw,
                sys::cudnnConvolutionFwdAlgo_t(algo),
                &mut bytes,
            )
        },
        // SAFETY: as above.
        ConvKind::BackwardData => unsafe {
            lib.cudnnGetConvolutionBackwardDataWorkspaceSize(
                handle,
                p.w.raw,
                p.y.raw,
                p.conv.raw,
                p.x.raw,
                sys::cudnnConvolutionBwdDataAlgo_t(algo),
                &mut bytes,
            )
        },
        // SAFETY: as above.
        ConvKind::BackwardFilter => unsafe {
            lib.cudnnGetConvolutionBackwardFilterWorkspaceSize(
                handle,
                p.x.raw,
                p.y.raw,
                p.conv.raw,
                p.w.raw,
                sys::cudnnConvolutionBwdFilterAlgo_t(algo),
                &mut bytes,
            )
        },
    };
    // A failed query means the algorithm does not support the problem: it is left out of the
    // workspace estimate (the search reports it as unsupported too).
    (status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS).then_some(bytes)
}

/// Runs `cudnnFind*AlgorithmEx` (which writes the output buffer) and returns its results, fastest
/// first.
#[allow(clippy::too_many_arguments)]
fn find(
    lib: &'static sys::CudnnLibrary,
    handle: sys::cudnnHandle_t,
    op: &'static str,
    kind: ConvKind,
    p: &Problem,
    ptrs: Operands,
    count: usize,
    (ws, ws_bytes): (u64, usize),
) -> Result<Vec<Perf>> {
    let requested = count.max(1) as i32;
    let mut returned = 0i32;
    let (find_call, _) = call_name(kind);
    let deterministic =
        |d: sys::cudnnDeterminism_t| d == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC;
    let perfs = match kind {
        ConvKind::Forward => {
            let mut out = vec![sys::cudnnConvolutionFwdAlgoPerf_t::default(); count.max(1)];
            // SAFETY: the descriptors describe the buffers behind the addresses (inputs read,
            // `y` written); `out` holds `requested` results; the workspace holds `ws_bytes`.
            check(lib, op, find_call, unsafe {
                lib.cudnnFindConvolutionForwardAlgorithmEx(
                    handle,
                    p.x.raw,
                    dptr(ptrs.a),
                    p.w.raw,
                    dptr(ptrs.b),
                    p.conv.raw,
                    p.y.raw,
                    dptr(ptrs.out),
                    requested,
                    &mut returned,
                    out.as_mut_ptr(),
                    dptr(ws),
                    ws_bytes,
                )
            })?;
            out.truncate(returned.max(0) as usize);
            out.iter()
                .map(|r| Perf {
                    algo: r.algo.0,
                    status: r.status,
                    memory: r.memory,
                    deterministic: deterministic(r.determinism),
                    math: r.mathType,
                })
                .collect::<Vec<_>>()
        }
        ConvKind::BackwardData => {
            let mut out = vec![sys::cudnnConvolutionBwdDataAlgoPerf_t::default(); count.max(1)];
            // SAFETY: as above (`dy` and `w` read, `dx` written).
            check(lib, op, find_call, unsafe {
                lib.cudnnFindConvolutionBackwardDataAlgorithmEx(
                    handle,
                    p.w.raw,
                    dptr(ptrs.b),
                    p.y.raw,
                    dptr(ptrs.a),
                    p.conv.raw,
                    p.x.raw,
                    dptr(ptrs.out),
                    requested,
                    &mut returned,
                    out.as_mut_ptr(),
                    dptr(ws),
                    ws_bytes,
                )
            })?;
            out.truncate(returned.max(0) as usize);
            out.iter()
                .map(|r| Perf {
                    algo: r.algo.0,
                    status: r.status,
                    memory: r.memory,
                    deterministic: deterministic(r.determinism),
                    math: r.mathType,
                })
                .collect()
        }
        ConvKind::BackwardFilter => {
            let mut out = vec![sys::cudnnConvolutionBwdFilterAlgoPerf_t::default(); count.max(1)];
            // SAFETY: as above (`x` and `dy` read, `dw` written).
            check(lib, op, find_call, unsafe {
                lib.cudnnFindConvolutionBackwardFilterAlgorithmEx(
                    handle,
                    p.x.raw,
                    dptr(ptrs.a),
                    p.y.raw,
                    dptr(ptrs.b),
                    p.conv.raw,
                    p.w.raw,
                    dptr(ptrs.out),
                    requested,
                    &mut returned,
                    out.as_mut_ptr(),
                    dptr(ws),
                    ws_bytes,
                )
            })?;
            out.truncate(returned.max(0) as usize);
            out.iter()
                .map(|r| Perf {
                    algo: r.algo.0,
                    status: r.status,
                    memory: r.memory,
                    deterministic: deterministic(r.determinism),
                    math: r.mathType,
                })
                .collect()
        }
    };
    Ok(perfs)
}

/// The fastest successful result that fits the workspace; with `deterministic`, the fastest
/// deterministic one when there is one.
fn choose(perfs: &[Perf], ws_bytes: usize, deterministic: bool) -> Option<Perf> {
    let usable = || {
        perfs
            .iter()
            .filter(move |p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
            .filter(move |p| p.memory <= ws_bytes)
    };
    deterministic
        .then(|| usable().find(|p| p.deterministic))
        .flatten()
        .or_else(|| usable().next())
        .copied()
}

/// Runs the chosen algorithm.
#[allow(clippy::too_many_arguments)]
fn execute(
    lib: &'static sys::CudnnLibrary,
    handle: sys::cudnnHandle_t,
    op: &'static str,
    kind: ConvKind,
    p: &Problem,
    algo: ConvAlgo,
    ptrs: Operands,
    ws: u64,
) -> Result<()> {
    let (_, call) = call_name(kind);
    let status = match kind {
        // SAFETY: the descriptors describe the buffers behind the addresses (operands read,
        // output written with beta = 0); the workspace holds at least `algo.workspace` bytes.
        ConvKind::Forward => unsafe {
            lib.cudnnConvolutionForward(
                handle,
                scale(&ONE),
                p.x.raw,
                dptr(ptrs.a),
                p.w.raw,
                dptr(ptrs.b),
                p.conv.raw,
                sys::cudnnConvolutionFwdAlgo_t(algo.algo),
                dptr(ws),
                algo.workspace,
                scale(&ZERO),
                p.y.raw,
                dptr(ptrs.out),
            )
        },
        // SAFETY: as above (`a` is dy, `b` is w, the output is dx).
        ConvKind::BackwardData => unsafe {
            lib.cudnnConvolutionBackwardData(
                handle,
                scale(&ONE),
                p.w.raw,
                dptr(ptrs.b),
                p.y.raw,
                dptr(ptrs.a),
                p.conv.raw,
                sys::cudnnConvolutionBwdDataAlgo_t(algo.algo),
                dptr(ws),
                algo.workspace,
                scale(&ZERO),
                p.x.raw,
                dptr(ptrs.out),
            )
        },
        // SAFETY: as above (`a` is x, `b` is dy, the output is dw).
        ConvKind::BackwardFilter => unsafe {
            lib.cudnnConvolutionBackwardFilter(
                handle,
                scale(&ONE),
                p.x.raw,
                dptr(ptrs.a),
                p.y.raw,
                dptr(ptrs.b),
                p.conv.raw,
                sys::cudnnConvolutionBwdFilterAlgo_t(algo.algo),
                dptr(ws),
                algo.workspace,
                scale(&ZERO),
                p.w.raw,
                dptr(ptrs.out),
            )
        },
    };
    check(lib, op, call, status)
}

impl CudaBackend {
    fn math_type(&self) -> sys::cudnnMathType_t {
        match self.precision {
            // Tensor cores allowed: fp32 data runs in TF32 where cuDNN finds it faster.
            Precision::Tf32 => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
            // bf16 data reaches the tensor cores only with TENSOR_OP math (DEFAULT math leaves
            // it on FMA kernels, ~100x slower: measured 4.7 vs 790 img/s).
            Precision::Bf16 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            Precision::Fp32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
        }
    }

    /// How the convolutions' operands are handed to cuDNN in this backend's precision.
    pub(crate) fn conv_layout(&self) -> DataLayout {
        match self.precision {
            Precision::Bf16 => DataLayout::NhwcBf16,
            Precision::Tf32 if self.conv_nhwc != Some(false) => DataLayout::NhwcF32,
            Precision::Fp32 if self.conv_nhwc == Some(true) => DataLayout::NhwcF32,
            Precision::Fp32 | Precision::Tf32 => DataLayout::NchwF32,
        }
    }

    /// Runs one convolution primitive on `(x, w, y)` shapes, choosing (once) and caching its
    /// algorithm.
    fn run_conv(
        &self,
        op: &'static str,
        kind: ConvKind,
        shapes: ([usize; 4], [usize; 4], [usize; 4]),
        attrs: &Conv2dAttrs,
        layout: DataLayout,
        ptrs: Operands,
    ) -> Result<()> {
        let mut state = self.lock_state()?;
        let (lib, handle) = (state.handle.lib, state.handle.raw);
        let p = Problem::new(lib, op, shapes, attrs, self.math_type(), layout)?;
        let key = self.conv_key(kind, shapes, attrs, layout);
        let algo = match state.conv_algos.chosen.get(&key).copied() {
            Some(algo) => {
                state.conv_algos.hits += 1;
                algo
            }
            None => {
                let algo = self.search(lib, handle, op, kind, &p, ptrs)?;
                state.conv_algos.chosen.insert(key, algo);
                state.conv_algos.searches += 1;
                algo
            }
        };
        if self.precision != Precision::Fp32 {
            // The search may have picked a tensor-core or an FMA kernel; run it in its math.
            p.conv.set_math(op, algo.math)?;
        }
        // A workspace of this call's own from the device's cache, returned right after the call
        // is queued (stream order keeps the next user of that memory after this convolution):
        // a persistent one the size of the hungriest algorithm would count in every peak.
        let workspace = match algo.workspace {
            0 => None,
            bytes => Some(self.device.alloc(bytes.div_ceil(4))?),
        };
        let ws = workspace.as_ref().map_or(0, |w| w.device_ptr());
        execute(lib, handle, op, kind, &p, algo, ptrs, ws)
    }

    /// Times every algorithm on the real buffers (the output is overwritten) with a temporary
    /// workspace of what the hungriest algorithm asks, capped at [`SEARCH_WORKSPACE_CAP`].
    fn search(
        &self,
        lib: &'static sys::CudnnLibrary,
        handle: sys::cudnnHandle_t,
        op: &'static str,
        kind: ConvKind,
        p: &Problem,
        ptrs: Operands,
    ) -> Result<ConvAlgo> {
        let count = algo_count(lib, handle, op, kind)?;
        let wanted = (0..count as u32)
            .filter_map(|a| workspace_size(lib, handle, kind, p, a))
            .max()
            .unwrap_or(0)
            .min(SEARCH_WORKSPACE_CAP);
        // Without memory for the largest workspace, search with none (algorithms needing one are
        // then reported as failed and skipped).
        let buffer = if wanted > 0 {
            self.device.alloc(wanted.div_ceil(4)).ok()
        } else {
            None
        };
        let ws = buffer.as_ref().map_or((0, 0), |b| (b.device_ptr(), wanted));
        let perfs = find(lib, handle, op, kind, p, ptrs, count, ws)?;
        let best = choose(&perfs, ws.1, self.deterministic).ok_or_else(|| OpError::Cuda {
            op,
            call: call_name(kind).0,
            detail: format!(
                "no algorithm succeeded ({} tried, workspace {} bytes): {:?}",
                perfs.len(),
                ws.1,
                perfs
                    .iter()
                    .map(|p| (p.algo, p.status.0))
                    .collect::<Vec<_>>()
            ),
        })?;
        // The temporary workspace goes back to the device's cache here; the search's kernels
        // are ordered before any later use of that memory on the one stream.
        drop(buffer);
        Ok(ConvAlgo {
            algo: best.algo,
            math: best.math,
            workspace: best.memory,
        })
    }

    /// Adds `bias[c]` to channel `c` of the NCHW tensor `y` (cudnnAddTensor broadcasts).
    fn add_conv_bias(&self, y: &mut Tensor, bias: Option<&Tensor>, op: &'static str) -> Result<()> {
        let Some(bias) = bias else {
            return Ok(());
        };
        if y.numel() == 0 {
            return Ok(());
        }
        let bias = self.input(bias)?;
        let shape = y.shape().to_vec();
        let y_ptr = y.device_ptr_mut()?;
        let state = self.lock_state()?;
        let lib = state.handle.lib;
        let b_desc = TensorDesc::nchw(lib, op, &[1, shape[1], 1, 1])?;
        let y_desc = TensorDesc::nchw(lib, op, &shape)?;
        // SAFETY: `bias` holds `shape[1]` values and `y` the whole NCHW tensor, both on this
        // device; `y` is read and written in place (beta = 1).
        check(lib, op, "cudnnAddTensor", unsafe {
            lib.cudnnAddTensor(
                state.handle.raw,
                scale(&ONE),
                b_desc.raw,
                dptr(bias.device_ptr()?),
                scale(&ONE),
                y_desc.raw,
                dptr(y_ptr),
            )
        })
    }

    /// One primitive on operands `a` and `b` into a new tensor of `out_shape`, plus `bias` per
    /// channel when given; zeros (plus bias) where an operand is empty (cuDNN refuses zero-sized
    /// tensors). The result is NCHW fp32, or an NHWC activation of the layout's element type
    /// when `nhwc_out` is asked and the primitive runs in NHWC (the activations of the bf16 and
    /// NHWC fp32 modes); `converted` are NHWC copies of the operands made already.
    #[allow(clippy::too_many_arguments)]
    fn conv_primitive(
        &self,
        op: &'static str,
        kind: ConvKind,
        shapes: ([usize; 4], [usize; 4], [usize; 4]),
        out_shape: [usize; 4],
        attrs: &Conv2dAttrs,
        (a, b): (&Tensor, &Tensor),
        bias: Option<&Tensor>,
        converted: [Option<&CudaBuffer>; 2],
        nhwc_out: bool,
    ) -> Result<Tensor> {
        let empty = |s: &[usize; 4]| s.contains(&0);
        if empty(&out_shape) {
            return self.output(&out_shape);
        }
        if empty(&shapes.0) || empty(&shapes.1) || empty(&shapes.2) {
            let mut out = self.zeros(&out_shape)?;
            self.add_conv_bias(&mut out, bias, op)?;
            return Ok(out);
        }
        let layout = self.conv_layout();
        if layout != DataLayout::NchwF32 {
            let operands = [(a, converted[0]), (b, converted[1])];
            let pad = self.input_padding(kind, shapes, layout, operands[0]);
            // The key of the problem cuDNN is given (padded when the input is).
            let key = self.conv_key(kind, padded(shapes, pad), attrs, layout);
            if !self.lock_state()?.conv_algos.nhwc_refused.contains(&key) {
                match self.conv_nhwc(
                    op, kind, shapes, pad, out_shape, attrs, layout, operands, bias, nhwc_out,
                ) {
                    Ok(out) => return Ok(out),
                    // Refused before any algorithm ran for this problem: cuDNN has none in
                    // this layout and type (an odd shape); NCHW fp32 it is, from now on.
                    Err(e) if !self.lock_state()?.conv_algos.chosen.contains_key(&key) => {
                        eprintln!(
                            "note: {op} {shapes:?} has no {layout:?} algorithm ({e}); it runs in NCHW fp32"
                        );
                        self.lock_state()?.conv_algos.nhwc_refused.insert(key);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let (a, b) = (self.input(a)?, self.input(b)?);
        let mut out = self.output(&out_shape)?;
        let ptrs = Operands {
            a: a.device_ptr()?,
            b: b.device_ptr()?,
            out: out.device_ptr_mut()?,
        };
        self.run_conv(op, kind, shapes, attrs, DataLayout::NchwF32, ptrs)?;
        self.add_conv_bias(&mut out, bias, op)?;
        Ok(out)
    }

    /// The cache key of one problem in this backend's precision and `layout`.
    fn conv_key(
        &self,
        kind: ConvKind,
        shapes: ([usize; 4], [usize; 4], [usize; 4]),
        attrs: &Conv2dAttrs,
        layout: DataLayout,
    ) -> ConvKey {
        ConvKey {
            kind,
            x: shapes.0,
            w: shapes.1,
            attrs: *attrs,
            precision: self.precision,
            layout,
        }
    }

    /// The primitive in an NHWC `layout`: each operand used as it is when it is an NHWC tensor
    /// of the layout's type already or has a converted copy, converted otherwise; the result
    /// written as an NHWC activation (`nhwc_out`, the bias added in place) or converted back to
    /// NCHW fp32 with the bias added.
    #[allow(clippy::too_many_arguments)]
    fn conv_nhwc(
        &self,
        op: &'static str,
        kind: ConvKind,
        shapes: ([usize; 4], [usize; 4], [usize; 4]),
        pad: Option<usize>,
        out_shape: [usize; 4],
        attrs: &Conv2dAttrs,
        layout: DataLayout,
        operands: [(&Tensor, Option<&CudaBuffer>); 2],
        bias: Option<&Tensor>,
        nhwc_out: bool,
    ) -> Result<Tensor> {
        let dtype = layout
            .nhwc_dtype()
            .expect("conv_nhwc runs in an NHWC layout");
        // `pad` ([`CudaBackend::input_padding`]): the input's channels zero-padded to that
        // count in its conversion (and in a forward pass's filter); the padded channels multiply
        // zeros, and a padded filter gradient is cut back.
        let shapes = padded(shapes, pad);
        // Conversions made here live until the primitive has been queued; dropping them then
        // returns the memory to the device's cache, ordered after the kernels on the one stream.
        let mut owned = Vec::new();
        let mut ptrs = [0u64; 2];
        for (i, (slot, (t, pre))) in ptrs.iter_mut().zip(operands).enumerate() {
            // The input, and a forward pass's filter (`[K, C, R, S]`: K images of C channels).
            let padded = pad.filter(|_| i == 0 || kind == ConvKind::Forward);
            // Used as it is: a copy made already, or memory in the layout's NHWC type.
            let ready = match (pre, padded) {
                (Some(c), None) => Some(c.device_ptr()),
                (None, None) => self.nhwc_memory(t, dtype),
                (_, Some(_)) => None,
            };
            *slot = match ready {
                Some(p) => p,
                None => {
                    let cp = padded.unwrap_or(t.shape()[1]);
                    let buf = self.nhwc_copy_padded(op, &self.input(t)?, layout, cp)?;
                    let p = buf.device_ptr();
                    owned.push(buf);
                    p
                }
            };
        }
        if nhwc_out {
            let out = self.nhwc_output(out_shape, dtype)?;
            let ptrs = Operands {
                a: ptrs[0],
                b: ptrs[1],
                out: out.channels_last_ptr()?,
            };
            self.run_conv(op, kind, shapes, attrs, layout, ptrs)?;
            if let Some(bias) = bias {
                self.add_channel_bias_nhwc(op, &out, bias, &out)?;
            }
            return Ok(out);
        }
        // The primitive's own output shape: a padded filter gradient has the padded channels.
        let conv_out = match kind {
            ConvKind::BackwardFilter => shapes.1,
            _ => out_shape,
        };
        let out_nhwc = self.scratch(numel4(&conv_out), layout)?;
        let conv_ptrs = Operands {
            a: ptrs[0],
            b: ptrs[1],
            out: out_nhwc.device_ptr(),
        };
        self.run_conv(op, kind, shapes, attrs, layout, conv_ptrs)?;
        let mut out = self.output(&out_shape)?;
        let bias = bias.map(|b| self.input(b)).transpose()?;
        match pad {
            Some(cp) if kind == ConvKind::BackwardFilter => {
                self.write_nchw_padded(op, out_nhwc.device_ptr(), &mut out, layout, cp)?
            }
            _ => self.write_nchw(op, out_nhwc.device_ptr(), &mut out, layout, bias.as_ref())?,
        }
        Ok(out)
    }

    /// The channel count a bf16 forward pass or filter gradient pads its input to: when the
    /// input has fewer than 32 channels that the tensor cores' alignment (8 bf16, 16 bytes) does
    /// not divide (the network's first convolution: 3) and is converted for the call anyway (no
    /// NHWC activation, no copy made already); cuDNN otherwise takes slower kernels for such
    /// problems. fp32 is not padded: cuDNN picked the same FMA kernels for 4 channels as for 3
    /// in TF32, and a slower filter gradient (0.48 vs 0.27 ms for the first layer).
    fn input_padding(
        &self,
        kind: ConvKind,
        shapes: ([usize; 4], [usize; 4], [usize; 4]),
        layout: DataLayout,
        input: (&Tensor, Option<&CudaBuffer>),
    ) -> Option<usize> {
        let c = shapes.0[1];
        const ALIGN: usize = 8;
        (layout == DataLayout::NhwcBf16
            && matches!(kind, ConvKind::Forward | ConvKind::BackwardFilter)
            && c < 32
            && !c.is_multiple_of(ALIGN)
            && input.1.is_none()
            && self.nhwc_dtype(input.0) != Some(magma_tensor::DType::BF16))
        .then(|| c.next_multiple_of(ALIGN))
    }

    /// The NHWC copy of `dy` both gradients of one convolution share, when both are needed and
    /// the convolutions run in NHWC and `dy` is not an NHWC tensor of the layout's type already
    /// (`None` otherwise: each primitive converts what it needs).
    fn shared_nhwc(
        &self,
        op: &'static str,
        dy: &Tensor,
        need: [bool; 2],
    ) -> Result<Option<CudaBuffer>> {
        let layout = self.conv_layout();
        if layout == DataLayout::NchwF32
            || !(need[0] && need[1])
            || dy.numel() == 0
            || self.nhwc_dtype(dy) == layout.nhwc_dtype()
        {
            return Ok(None);
        }
        let dy = self.input(dy)?;
        Ok(Some(self.nhwc_copy(op, &dy, layout)?))
    }
}

/// `shapes` with the input's (and filter's) channels padded to `pad` when given.
fn padded(
    shapes: ([usize; 4], [usize; 4], [usize; 4]),
    pad: Option<usize>,
) -> ([usize; 4], [usize; 4], [usize; 4]) {
    match pad {
        Some(cp) => {
            let ([n, _, h, w], [k, _, r, s], y) = shapes;
            ([n, cp, h, w], [k, cp, r, s], y)
        }
        None => shapes,
    }
}

fn numel4(shape: &[usize; 4]) -> usize {
    shape.iter().product()
}

impl ConvOps for CudaBackend {
    fn conv_weight(&self, w: &Tensor) -> Result<Tensor> {
        if let Some(dtype) = self.conv_layout().nhwc_dtype()
            && w.rank() == 4
            && w.numel() > 0
        {
            // KRSC in the layout's type: the operand layout of the NHWC convolutions, made once
            // per pass instead of once per convolution.
            return self.to_nhwc("conv_weight", w, dtype);
        }
        Ok(w.clone())
    }

    fn conv2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        attrs: &Conv2dAttrs,
    ) -> Result<Tensor> {
        let g = CpuBackend::check_conv2d(x, w, bias, attrs)?;
        if let Some(dtype) = self.pointwise_dtype(x, g.w_shape(), attrs)
            && x.numel() > 0
        {
            return self.pointwise_forward("conv2d", x, w, bias, dtype);
        }
        if let Some(dtype) = self.few_channel_dtype(x, g.w_shape(), attrs) {
            return self.few_channel_forward("conv2d", x, w, bias, attrs, dtype);
        }
        let shapes = (g.x_shape(), g.w_shape(), g.y_shape());
        self.conv_primitive(
            "conv2d",
            ConvKind::Forward,
            shapes,
            g.y_shape(),
            attrs,
            (x, w),
            bias,
            [None, None],
            true,
        )
    }

    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Result<Tensor> {
        let g = CpuBackend::check_conv2d_backward_data(dy, w, x_shape, attrs)?;
        let shapes = (g.x_shape(), g.w_shape(), g.y_shape());
        self.conv_primitive(
            "conv2d_backward_data",
            ConvKind::BackwardData,
            shapes,
            x_shape,
            attrs,
            (dy, w),
            None,
            [None, None],
            false,
        )
    }

    fn conv2d_backward_filter(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Result<Tensor> {
        let g = CpuBackend::check_conv2d_backward_filter(x, dy, w_shape, attrs)?;
        if let Some(dtype) = self.pointwise_dtype(x, w_shape, attrs)
            && x.numel() > 0
        {
            return self.pointwise_backward_filter("conv2d_backward_filter", x, dy, w_shape, dtype);
        }
        if self.few_channel_filter_applies(x, dy, w_shape, attrs) {
            const OP: &str = "conv2d_backward_filter";
            return self.few_channel_backward_filter(OP, x, dy, w_shape, attrs);
        }
        let shapes = (g.x_shape(), g.w_shape(), g.y_shape());
        self.conv_primitive(
            "conv2d_backward_filter",
            ConvKind::BackwardFilter,
            shapes,
            w_shape,
            attrs,
            (x, dy),
            None,
            [None, None],
            false,
        )
    }

    fn conv_transpose2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        attrs: &ConvTranspose2dAttrs,
    ) -> Result<Tensor> {
        // The data gradient of the convolution from the output shape to the input shape: the
        // weight [in, out, kh, kw] is that convolution's filter [K = in, C = out].
        let y_shape = CpuBackend::check_conv_transpose2d(x, w, bias, attrs)?;
        let conv = attrs.as_conv();
        let g = CpuBackend::check_conv2d_backward_data(x, w, y_shape, &conv)?;
        let shapes = (g.x_shape(), g.w_shape(), g.y_shape());
        self.conv_primitive(
            "conv_transpose2d",
            ConvKind::BackwardData,
            shapes,
            y_shape,
            &conv,
            (x, w),
            bias,
            [None, None],
            true,
        )
    }
    fn conv_transpose2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        attrs: &ConvTranspose2dAttrs,
    ) -> Result<Tensor> {
        // A forward convolution of the output gradient by the same filter.
        self.conv2d(dy, w, None, &attrs.as_conv())
    }

    fn conv_transpose2d_backward_filter(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        attrs: &ConvTranspose2dAttrs,
    ) -> Result<Tensor> {
        // The filter gradient with roles swapped: the convolution's input is `dy`, its output
        // gradient is `x`.
        self.conv2d_backward_filter(dy, x, w_shape, &attrs.as_conv())
    }

    fn conv2d_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        attrs: &Conv2dAttrs,
        need: [bool; 2],
    ) -> Result<[Option<Tensor>; 2]> {
        const OP: &str = "conv2d_backward";
        let (x_shape, w_shape) = (x.shape4(OP)?, w.shape4(OP)?);
        let data = CpuBackend::check_conv2d_backward_data(dy, w, x_shape, attrs)?;
        CpuBackend::check_conv2d_backward_filter(x, dy, w_shape, attrs)?;
        if let Some(dtype) = self.pointwise_dtype(x, w_shape, attrs)
            && x.numel() > 0
        {
            let dx = need[0]
                .then(|| {
                    self.pointwise_backward_data("conv2d_backward_data", dy, w, x_shape, dtype)
                })
                .transpose()?;
            let dw = need[1]
                .then(|| {
                    self.pointwise_backward_filter("conv2d_backward_filter", x, dy, w_shape, dtype)
                })
                .transpose()?;
            return Ok([dx, dw]);
        }
        let shapes = (data.x_shape(), data.w_shape(), data.y_shape());
        // The first layer's filter gradient from its NHWC output gradient, by our kernels (its
        // fp32 NHWC `dy` needs no shared copy below).
        let few_channel_dw = (need[1] && self.few_channel_filter_applies(x, dy, w_shape, attrs))
            .then(|| {
                const FILTER: &str = "conv2d_backward_filter";
                self.few_channel_backward_filter(FILTER, x, dy, w_shape, attrs)
            })
            .transpose()?;
        let dy_nhwc = self.shared_nhwc(OP, dy, need)?;
        let dx = need[0]
            .then(|| {
                self.conv_primitive(
                    "conv2d_backward_data",
                    ConvKind::BackwardData,
                    shapes,
                    x_shape,
                    attrs,
                    (dy, w),
                    None,
                    [dy_nhwc.as_ref(), None],
                    self.is_nhwc(x),
                )
            })
            .transpose()?;
        if few_channel_dw.is_some() {
            return Ok([dx, few_channel_dw]);
        }
        let dw = need[1]
            .then(|| {
                self.conv_primitive(
                    "conv2d_backward_filter",
                    ConvKind::BackwardFilter,
                    shapes,
                    w_shape,
                    attrs,
                    (x, dy),
                    None,
                    [None, dy_nhwc.as_ref()],
                    false,
                )
            })
            .transpose()?;
        Ok([dx, dw])
    }

    fn conv_transpose2d_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        attrs: &ConvTranspose2dAttrs,
        need: [bool; 2],
    ) -> Result<[Option<Tensor>; 2]> {
        // Both are convolutions of `dy` (its first operand): forward by `w` for the input
        // gradient, the filter gradient against `x` for the weight gradient.
        const OP: &str = "conv_transpose2d_backward";
        let (x_shape, w_shape) = (x.shape4(OP)?, w.shape4(OP)?);
        let conv = attrs.as_conv();
        let fwd = CpuBackend::check_conv2d(dy, w, None, &conv)?;
        let filter = CpuBackend::check_conv2d_backward_filter(dy, x, w_shape, &conv)?;
        let dy_nhwc = self.shared_nhwc(OP, dy, need)?;
        let dx = need[0]
            .then(|| {
                self.conv_primitive(
                    "conv_transpose2d_backward_data",
                    ConvKind::Forward,
                    (fwd.x_shape(), fwd.w_shape(), fwd.y_shape()),
                    x_shape,
                    &conv,
                    (dy, w),
                    None,
                    [dy_nhwc.as_ref(), None],
                    self.is_nhwc(x),
                )
            })
            .transpose()?;
        let dw = need[1]
            .then(|| {
                self.conv_primitive(
                    "conv_transpose2d_backward_filter",
                    ConvKind::BackwardFilter,
                    (filter.x_shape(), filter.w_shape(), filter.y_shape()),
                    w_shape,
                    &conv,
                    (dy, x),
                    None,
                    [dy_nhwc.as_ref(), None],
                    false,
                )
            })
            .transpose()?;
        Ok([dx, dw])
    }
}
