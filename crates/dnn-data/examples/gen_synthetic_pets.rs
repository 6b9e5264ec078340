//! Writes a synthetic Oxford-IIIT-Pet-like dataset:
//! `cargo run -p dnn-data --example gen_synthetic_pets -- OUT_DIR [IMAGES] [SIDE] [SEED]`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(
        args.next()
            .ok_or("usage: gen_synthetic_pets OUT_DIR [IMAGES] [SIDE] [SEED]")?,
    );
    let mut config = dnn_data::SyntheticConfig::new(args.next().map_or(Ok(400), |v| v.parse())?);
    if let Some(side) = args.next() {
        let side: usize = side.parse()?;
        config.size = [side, side];
    }
    if let Some(seed) = args.next() {
        config.seed = seed.parse()?;
    }
    let start = std::time::Instant::now();
    let summary = dnn_data::generate_synthetic_pets(&root, &config)?;
    println!(
        "wrote {} images ({} trainval, {} test) to {} in {:.2} s",
        summary.images,
        summary.trainval,
        summary.test,
        root.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
