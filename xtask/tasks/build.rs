//! With the `cuda` feature, gives the tasks binary the RUNPATH where cuDNN (`libcudnn.so.9`,
//! opened at run time by cudnn-sys) and its companions live on the GPU machine: the binary's own
//! folder, the pip wheels of /opt/torch/.venv and the usual system folders, or
//! `MAGMA_CUDA_RPATH`. The same list as dnn-ops' test binaries (crates/dnn-ops/build.rs), plus
//! the venv's `nvidia/nccl/lib` for libnccl.so.2 (opened by nccl-sys with the `nccl` feature).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MAGMA_CUDA_RPATH");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let runpath = std::env::var("MAGMA_CUDA_RPATH").unwrap_or_else(|_| {
        let venv = "/opt/torch/.venv/lib/python3.12/site-packages/nvidia";
        format!(
            "$ORIGIN:$ORIGIN/lib:{venv}/cudnn/lib:{venv}/cu13/lib:{venv}/nccl/lib:\
             /usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu"
        )
    });
    println!("cargo:rustc-link-arg-bins=-Wl,--enable-new-dtags,-rpath,{runpath}");
}
