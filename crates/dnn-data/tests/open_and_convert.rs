//! Opening datasets by path (HDF5 file, Pet folder, images/ + masks/ folder) and the acceptance
//! check: the real Oxford-IIIT Pet sample in `../shared` converted to HDF5 (trainval, test, all)
//! and read back by h5py with the documented schema. Tests that need `../shared` skip with a
//! message when it is absent.
//!
//! Needs the `opencv` feature (image decoding / JPEG encoding).
#![cfg(feature = "opencv")]

use std::path::{Path, PathBuf};
use std::process::Command;

use dnn_data::image_io::{encode_png, encode_png_bytes};
use dnn_data::{
    DatasetLayout, Hdf5Segmentation, Hdf5WriteOptions, Mask, RgbImage, SegmentationSource,
    detect_layout, open_segmentation, open_segmentation_detailed, write_segmentation_hdf5,
};

/// The message of an error that must happen.
fn err_of<T>(result: dnn_data::Result<T>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn pet_sample() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/oxford-pet-sample"
    ));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: {} is absent (the Oxford-IIIT Pet sample lives in ../shared)",
            dir.display()
        );
        None
    }
}

/// Runs an h5py script with the system Python; `None` (skip) when h5py is missing and CI is unset.
fn run_h5py(script: &str, args: &[&str]) -> Option<String> {
    let python = "/usr/bin/python3";
    let ok = Command::new(python)
        .args(["-c", "import h5py"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{python} cannot import h5py and CI is set: install python3-h5py (cargo xtask test does)"
        );
        eprintln!(
            "skipping the h5py check: {python} cannot import h5py (apt-get install python3-h5py)"
        );
        return None;
    }
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "h5py check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The schema check of docs/data.md; prints N, split names and per-split counts.
const H5PY_CHECK: &str = r#"
import sys, h5py, numpy as np
path, size = sys.argv[1], int(sys.argv[2])
with h5py.File(path, "r") as f:
    a = f.attrs
    assert a["schema"] == "magma-dnn-segmentation" and int(a["schema_version"]) == 2
    assert [str(c) for c in a["class_names"]] == ["pet", "background", "border"]
    splits = [str(s) for s in a["split_names"]]
    assert list(a["size"]) == [size, size]
    assert "oxford-pet-sample" in a["source"], a["source"]
    n = f["images"].shape[0]
    assert f["images"].shape == (n, size, size, 3) and f["images"].dtype == np.uint8
    assert f["masks"].shape == (n, size, size) and f["masks"].dtype == np.uint8
    assert f["images"].chunks == (1, size, size, 3) and f["images"].compression == "gzip"
    names = [s.decode() if isinstance(s, bytes) else s for s in f["names"][:]]
    assert len(set(names)) == n and all(s.split("_")[0] in ("Abyssinian", "Bengal", "american") for s in names)
    m = f["masks"][:]
    assert int(m.max()) <= 2 and set(np.unique(m)) == {0, 1, 2}
    img = f["images"][0]
    assert img.std() > 5, "image 0 looks blank"
    counts = np.bincount(f["split"][:], minlength=len(splits))
    print(n, " ".join(f"{s}={c}" for s, c in zip(splits, counts)))
"#;

#[test]
fn pet_sample_converts_to_hdf5_that_h5py_reads() {
    let Some(root) = pet_sample() else { return };
    assert_eq!(detect_layout(&root).unwrap(), DatasetLayout::Pet);
    let dir = tempfile::tempdir().unwrap();
    let expected = [
        ("trainval", 101, "101 trainval=101"),
        ("test", 99, "99 test=99"),
        ("all", 200, "200 trainval=101 test=99"),
    ];
    for (split, n, line) in expected {
        let opened = open_segmentation_detailed(&root, split).unwrap();
        assert_eq!(opened.source.len(), n, "{split}");
        let out = dir.path().join(format!("pets-{split}.h5"));
        let opts = Hdf5WriteOptions {
            size: Some(48),
            split_names: opened.split_names.clone(),
            splits: opened.splits.clone(),
            ..Hdf5WriteOptions::new(format!("{} ({split})", root.display()))
        };
        let summary = write_segmentation_hdf5(opened.source.as_ref(), &out, &opts).unwrap();
        assert_eq!((summary.samples, summary.size), (n, [48, 48]));
        if let Some(stdout) = run_h5py(H5PY_CHECK, &[out.to_str().unwrap(), "48"]) {
            assert_eq!(stdout.trim(), line);
        }
    }
    // The "all" file serves each split again, and through open_segmentation too.
    let all = dir.path().join("pets-all.h5");
    assert_eq!(
        Hdf5Segmentation::open_split(&all, "test").unwrap().len(),
        99
    );
    let trainval = open_segmentation(&all, "trainval").unwrap();
    assert_eq!(trainval.len(), 101);
    let from_folder = open_segmentation(&root, "trainval").unwrap();
    assert_eq!(trainval.name(7), from_folder.name(7));
    let s = trainval.load(7).unwrap();
    assert_eq!((s.image.width, s.image.height), (48, 48));
    assert!(s.mask.data.iter().all(|&v| v < 3));
    // An unknown Pet split is an error naming the folder.
    let err = err_of(open_segmentation(&root, "val"));
    assert!(
        err.contains("oxford-pet-sample") && err.contains("\"val\""),
        "{err}"
    );
}

#[test]
fn layouts_are_detected_and_anything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // images/ + masks/ folder, through the folder reader, then through HDF5.
    let folder = d.join("seg");
    std::fs::create_dir_all(folder.join("images")).unwrap();
    std::fs::create_dir_all(folder.join("masks")).unwrap();
    for i in 0..3 {
        let image = RgbImage {
            width: 6,
            height: 4,
            data: (0..72).map(|p| (p * 3 + i * 10) as u8).collect(),
        };
        let mask = Mask {
            width: 6,
            height: 4,
            data: (0..24).map(|p| ((p + i) % 2) as u8).collect(),
        };
        let bytes = encode_png_bytes((&image).into(), Path::new("x.png")).unwrap();
        std::fs::write(folder.join(format!("images/s{i}.png")), bytes).unwrap();
        encode_png(&folder.join(format!("masks/s{i}.png")), (&mask).into()).unwrap();
    }
    assert_eq!(detect_layout(&folder).unwrap(), DatasetLayout::Folders);
    let source = open_segmentation(&folder, "all").unwrap();
    assert_eq!(source.len(), 3);
    let err = err_of(open_segmentation(&folder, "test"));
    assert!(err.contains("no splits"), "{err}");
    let h5 = d.join("seg.h5");
    write_segmentation_hdf5(source.as_ref(), &h5, &Hdf5WriteOptions::new("folder")).unwrap();
    assert_eq!(detect_layout(&h5).unwrap(), DatasetLayout::Hdf5);
    let back = open_segmentation(&h5, "all").unwrap();
    assert_eq!(back.load(2).unwrap(), source.load(2).unwrap());

    // Anything else says what is accepted.
    let other = d.join("other");
    std::fs::create_dir_all(other.join("pictures")).unwrap();
    let txt = d.join("notes.txt");
    std::fs::write(&txt, "hello").unwrap();
    for path in [&other, &txt] {
        let err = err_of(open_segmentation(path, "all"));
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(
            err.contains("accepted") && err.contains(".h5") && err.contains("annotations/trimaps"),
            "{err}"
        );
    }
    let err = err_of(open_segmentation(&d.join("missing"), "all"));
    assert!(err.contains("missing"), "{err}");
}
