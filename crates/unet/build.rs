//! Embeds the DejaVu Sans font (Debian's fonts-dejavu-core, free licence) that the run figures
//! are labelled with, so a binary carried to a machine without the font still draws them.
//! Without the font at build time the binary looks for it at run time instead.

use std::path::PathBuf;

const CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(magma_embedded_font)");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("DejaVuSans.ttf");
    for candidate in CANDIDATES {
        println!("cargo:rerun-if-changed={candidate}");
        if std::fs::copy(candidate, &out).is_ok() {
            println!("cargo:rustc-cfg=magma_embedded_font");
            return;
        }
    }
    println!(
        "cargo:warning=DejaVuSans.ttf not found (apt install fonts-dejavu-core): figures will look for it at run time"
    );
}
