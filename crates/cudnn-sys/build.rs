//! Regenerates the cuDNN bindings, only when asked.
//!
//! `cargo build -p cudnn-sys --features bindgen` with `CUDNN_SYS_REGENERATE=1` runs bindgen over
//! `wrapper.h` and overwrites `src/bindings.rs`. Headers are found through `CUDNN_INCLUDE_DIR`
//! and `CUDA_INCLUDE_DIR`, or in the project's `.cuda-sdk/` (made by `cargo xtask setup-cuda`).
//! Nothing is linked: libcudnn.so.9 is opened at run time (see `src/lib.rs`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDNN_SYS_REGENERATE");
    #[cfg(feature = "bindgen")]
    if std::env::var("CUDNN_SYS_REGENERATE").as_deref() == Ok("1") {
        regenerate();
    }
}

#[cfg(feature = "bindgen")]
fn regenerate() {
    use std::path::PathBuf;
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let sdk = manifest.join("../../.cuda-sdk/nvidia");
    let include = |var: &str, fallback: PathBuf| {
        println!("cargo:rerun-if-env-changed={var}");
        std::env::var(var).map(PathBuf::from).unwrap_or(fallback)
    };
    let cudnn_inc = include("CUDNN_INCLUDE_DIR", sdk.join("cudnn/include"));
    let cuda_inc = include("CUDA_INCLUDE_DIR", sdk.join("cu13/include"));
    let bindings = bindgen::Builder::default()
        .header(manifest.join("wrapper.h").to_string_lossy())
        .clang_arg(format!("-I{}", cudnn_inc.display()))
        .clang_arg(format!("-I{}", cuda_inc.display()))
        .allowlist_function("cudnn.*")
        .allowlist_type("cudnn.*")
        .allowlist_var("CUDNN.*")
        // Enums as newtypes: an unknown value from a newer libcudnn is a value, not UB.
        .default_enum_style(bindgen::EnumVariation::NewType {
            is_bitfield: false,
            is_global: false,
        })
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .dynamic_library_name("CudnnLibrary")
        .dynamic_link_require_all(true)
        .generate()
        .expect("bindgen failed: set CUDNN_INCLUDE_DIR and CUDA_INCLUDE_DIR, or run cargo xtask setup-cuda");
    let dst = manifest.join("src/bindings.rs");
    bindings.write_to_file(&dst).expect("write src/bindings.rs");
    println!("cargo:warning=regenerated {}", dst.display());
}
