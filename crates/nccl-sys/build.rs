//! Regenerates the NCCL bindings, only when asked.
//!
//! `cargo build -p nccl-sys --features bindgen` with `NCCL_SYS_REGENERATE=1` runs bindgen over
//! `wrapper.h` (`nccl.h`) and overwrites `src/bindings.rs`. Headers are found through
//! `NCCL_INCLUDE_DIR` and `CUDA_INCLUDE_DIR`, or in the project's `.cuda-sdk/` (made by
//! `cargo xtask setup-cuda`, which installs the `nvidia-nccl-cu13` wheel's headers into
//! `.cuda-sdk/nvidia/nccl/include`). `nccl.h` includes `cuda_runtime.h` and `cuda_fp16.h`, so the
//! CUDA include folder must also hold the CCCL headers (`nv/target`).
//! Nothing is linked: libnccl.so.2 is opened at run time (see `src/lib.rs`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NCCL_SYS_REGENERATE");
    #[cfg(feature = "bindgen")]
    if std::env::var("NCCL_SYS_REGENERATE").as_deref() == Ok("1") {
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
    let nccl_inc = include("NCCL_INCLUDE_DIR", sdk.join("nccl/include"));
    let cuda_inc = include("CUDA_INCLUDE_DIR", sdk.join("cu13/include"));
    println!(
        "cargo:rerun-if-changed={}",
        nccl_inc.join("nccl.h").display()
    );
    let bindings = bindgen::Builder::default()
        .header(manifest.join("wrapper.h").to_string_lossy())
        .clang_arg(format!("-I{}", nccl_inc.display()))
        .clang_arg(format!("-I{}", cuda_inc.display()))
        .allowlist_function("nccl.*")
        .allowlist_type("nccl.*")
        .allowlist_var("NCCL.*")
        // Enums as newtypes: an unknown value from a newer libnccl is a value, not UB.
        .default_enum_style(bindgen::EnumVariation::NewType {
            is_bitfield: false,
            is_global: false,
        })
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .dynamic_library_name("NcclLibrary")
        // Functions newer than the loaded libnccl are left unresolved instead of failing the
        // load; `library()` checks the ones the project calls (`REQUIRED`).
        .dynamic_link_require_all(false)
        .generate()
        .expect(
            "bindgen failed: set NCCL_INCLUDE_DIR (nccl.h) and CUDA_INCLUDE_DIR (cuda_runtime.h \
             and the CCCL headers), or run cargo xtask setup-cuda",
        );
    let dst = manifest.join("src/bindings.rs");
    bindings.write_to_file(&dst).expect("write src/bindings.rs");
    println!("cargo:warning=regenerated {}", dst.display());
}
