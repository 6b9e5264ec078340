//! A build without the `opencv` feature (the GPU build) opens `.h5` datasets only, and says how
//! to get one for a Pet or image folder.
#![cfg(not(feature = "opencv"))]

use dnn_data::{DataError, open_segmentation};

#[test]
fn image_folders_ask_for_an_hdf5_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let pet = dir.path().join("pet");
    std::fs::create_dir_all(pet.join("annotations/trimaps")).unwrap();
    std::fs::create_dir_all(pet.join("images")).unwrap();
    let folders = dir.path().join("folders");
    std::fs::create_dir_all(folders.join("images")).unwrap();
    std::fs::create_dir_all(folders.join("masks")).unwrap();
    for (path, layout) in [
        (&pet, "Oxford-IIIT Pet folder"),
        (&folders, "images/ + masks/"),
    ] {
        let err = open_segmentation(path, "all")
            .err()
            .expect("no OpenCV: an error");
        assert!(matches!(err, DataError::Format { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(layout), "{text}");
        assert!(text.contains("this build has no OpenCV"), "{text}");
        assert!(text.contains("cargo xtask convert-hdf5"), "{text}");
        assert!(text.contains(".h5 file"), "{text}");
    }
}

#[test]
fn png_masks_still_decode_and_other_masks_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mask = dnn_data::Mask {
        width: 3,
        height: 2,
        data: vec![0, 1, 2, 2, 1, 0],
    };
    let png = dir.path().join("m.png");
    dnn_data::image_io::encode_png(&png, (&mask).into()).unwrap();
    assert_eq!(dnn_data::image_io::read_mask(&png).unwrap(), mask);
    let bmp = dir.path().join("m.bmp");
    std::fs::write(&bmp, b"BM\0\0\0\0\0\0\0\0").unwrap();
    let err = dnn_data::image_io::read_mask(&bmp).unwrap_err().to_string();
    assert!(err.contains("this build has no OpenCV"), "{err}");
}
