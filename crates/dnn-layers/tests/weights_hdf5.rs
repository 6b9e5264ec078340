//! Weights in HDF5: round trip, mismatch reports, atomic writes, and h5py readability.

use std::process::Command;

use dnn_layers::archive::{AttrValue, TensorArchive};
use dnn_layers::layers::*;
use dnn_layers::weights::{load_weights, save_weights};
use dnn_layers::{LayerError, Module};
use magma_tensor::SeededRng;

fn net(seed: u64, hidden: usize) -> Sequential {
    let mut rng = SeededRng::new(seed);
    Sequential::new()
        .with(
            Conv2dConfig::new(1, 2, [3, 3])
                .init("features/conv1", &mut rng)
                .unwrap(),
        )
        .with(BatchNormConfig::new(2).init("features/bn1").unwrap())
        .with(Flatten)
        .with(
            LinearConfig::new(8, hidden)
                .init("head/fc", &mut rng)
                .unwrap(),
        )
}

fn values(m: &dyn Module) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    m.visit_parameters(&mut |p| out.push((p.name().to_string(), p.value().to_vec().unwrap())));
    m.visit_buffers(&mut |n, t| out.push((n.to_string(), t.to_vec().unwrap())));
    out
}

#[test]
fn weights_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.h5");
    let a = net(1, 5);
    save_weights(&a, &path).unwrap();
    let mut b = net(2, 5);
    assert_ne!(values(&a), values(&b));
    load_weights(&mut b, &path).unwrap();
    assert_eq!(values(&a), values(&b));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file left behind: {leftovers:?}"
    );
}

#[test]
fn a_mismatched_file_says_what_differs_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.h5");
    save_weights(&net(1, 5), &path).unwrap();
    let mut other = net(3, 6);
    let before = values(&other);
    let err = load_weights(&mut other, &path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LayerError::Mismatch { .. }));
    assert!(
        msg.contains("head/fc/weight") && msg.contains("[6, 8]") && msg.contains("[5, 8]"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()));
    assert_eq!(before, values(&other));
}

#[test]
fn missing_and_foreign_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.h5");
    let err = load_weights(&mut net(1, 5), &missing)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope.h5") && err.contains("no such file"),
        "{err}"
    );
    let junk = dir.path().join("junk.h5");
    std::fs::write(&junk, b"not hdf5 at all").unwrap();
    let err = load_weights(&mut net(1, 5), &junk).unwrap_err().to_string();
    assert!(err.contains("junk.h5"), "{err}");
    let mut foreign = TensorArchive::new();
    foreign.set_attr("format", AttrValue::Str("something-else".into()));
    let f = dir.path().join("foreign.h5");
    foreign.write(&f).unwrap();
    let err = load_weights(&mut net(1, 5), &f).unwrap_err().to_string();
    assert!(err.contains("not a magma-dnn weights file"), "{err}");
}

/// The Debian interpreter that has python3-h5py (`cargo xtask test` installs it).
fn system_python_with_h5py() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import h5py"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

#[test]
fn h5py_reads_the_weights_by_parameter_path() {
    let Some(python) = system_python_with_h5py() else {
        if std::env::var_os("CI").is_some() {
            panic!("h5py is missing on CI; cargo xtask test installs python3-h5py");
        }
        eprintln!("skipped: no python3 with h5py here (apt-get install python3-h5py)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.h5");
    let a = net(4, 5);
    save_weights(&a, &path).unwrap();
    let script = r#"
import sys, h5py
f = h5py.File(sys.argv[1], "r")
w = f["head/fc/weight"]
print(f.attrs["format"], f.attrs["version"], w.shape, w.dtype, "%.6f" % float(w[0, 0]), "%.6f" % float(f["features/bn1/running_var"][1]))
"#;
    let out = Command::new(python)
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut w00 = 0.0;
    a.visit_parameters(&mut |p| {
        if p.name() == "head/fc/weight" {
            w00 = p.value().to_vec().unwrap()[0];
        }
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("magma-dnn-weights 1 (5, 8) float32 {w00:.6} 1.000000")
    );
}
