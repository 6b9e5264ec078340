//! Image and mask decoding by content, palette masks, reduced decoding and atomic writers.
//!
//! Needs the `opencv` feature (image decoding / JPEG encoding).
#![cfg(feature = "opencv")]

use std::path::{Path, PathBuf};

use dnn_data::image_io::{
    self, ImageFormat, PixelsRef, decode_mask, decode_rgb, decode_rgb_for_target, encode_jpeg,
    encode_png, encode_png_palette, jpeg_size, png_header, reduction_factor,
};
use dnn_data::{DataError, Mask, RgbImage};

/// A 1×1 GIF89a.
const TINY_GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

fn gradient(w: usize, h: usize) -> RgbImage {
    RgbImage {
        width: w,
        height: h,
        data: (0..w * h)
            .flat_map(|i| [(i % w * 255 / w) as u8, (i / w * 255 / h) as u8, 128])
            .collect(),
    }
}

/// PNG bytes written by the `png` crate with any colour type and depth.
fn png_bytes(
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<Vec<u8>>,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, w, h);
        e.set_color(color);
        e.set_depth(depth);
        if let Some(p) = palette {
            e.set_palette(p);
        }
        let mut wr = e.write_header().unwrap();
        wr.write_image_data(data).unwrap();
    }
    out
}

fn p(name: &str) -> PathBuf {
    PathBuf::from(format!("/data/{name}"))
}

#[test]
fn formats_are_recognised_by_their_first_bytes() {
    let cases: [(&[u8], ImageFormat); 9] = [
        (&[0xFF, 0xD8, 0xFF, 0xE0], ImageFormat::Jpeg),
        (b"\x89PNG\r\n\x1a\n....", ImageFormat::Png),
        (b"GIF87a..", ImageFormat::Gif),
        (TINY_GIF, ImageFormat::Gif),
        (b"BM......", ImageFormat::Bmp),
        (b"II*\0....", ImageFormat::Tiff),
        (b"RIFF\0\0\0\0WEBPVP8 ", ImageFormat::WebP),
        (b"P5\n2 2\n255\n", ImageFormat::Pnm),
        (b"hello world", ImageFormat::Unknown),
    ];
    for (bytes, format) in cases {
        assert_eq!(ImageFormat::detect(bytes), format, "{bytes:?}");
    }
    assert_eq!(
        ImageFormat::detect(b"RIFF\0\0\0\0WAVE"),
        ImageFormat::Unknown
    );
    assert_eq!(ImageFormat::detect(&[]), ImageFormat::Unknown);
}

#[test]
fn decoding_goes_by_content_and_converts_bgr_to_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let image = RgbImage {
        width: 3,
        height: 2,
        data: vec![
            255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90,
        ],
    };
    // A PNG named .jpg decodes exactly, in RGB order.
    let path = tmp.path().join("fake.jpg");
    encode_png(&path, PixelsRef::from(&image)).unwrap();
    assert_eq!(image_io::read_rgb(&path).unwrap(), image);
    // A JPEG named .png decodes too (lossy: close, and red stays red).
    let path = tmp.path().join("fake.png");
    let big = gradient(32, 24);
    encode_jpeg(&path, &big, 95).unwrap();
    let back = image_io::read_rgb(&path).unwrap();
    assert_eq!((back.width, back.height), (32, 24));
    let max_diff = back
        .data
        .iter()
        .zip(&big.data)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(max_diff < 24, "max difference {max_diff}");
    let red = RgbImage {
        width: 16,
        height: 16,
        data: [230, 20, 20].repeat(256),
    };
    encode_jpeg(&path, &red, 95).unwrap();
    let px = &image_io::read_rgb(&path).unwrap().data[..3];
    assert!(px[0] > 200 && px[2] < 50, "{px:?}");
}

#[test]
fn grey_alpha_and_sixteen_bit_images_become_rgb() {
    let grey = png_bytes(
        2,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        None,
        &[7, 250],
    );
    assert_eq!(
        decode_rgb(&grey, &p("g.png")).unwrap().data,
        [7, 7, 7, 250, 250, 250]
    );
    // RGBA: opaque keeps the colour, transparent becomes black, half alpha halves.
    let rgba = png_bytes(
        3,
        1,
        png::ColorType::Rgba,
        png::BitDepth::Eight,
        None,
        &[200, 100, 50, 255, 200, 100, 50, 0, 200, 100, 50, 128],
    );
    assert_eq!(
        decode_rgb(&rgba, &p("a.jpg")).unwrap().data,
        [200, 100, 50, 0, 0, 0, 100, 50, 25]
    );
    let deep = png_bytes(
        1,
        1,
        png::ColorType::Rgb,
        png::BitDepth::Sixteen,
        None,
        &[0xFF, 0xFF, 0x80, 0x80, 0, 0],
    );
    assert_eq!(decode_rgb(&deep, &p("d.png")).unwrap().data, [255, 128, 0]);
}

#[test]
fn undecodable_content_is_a_typed_error_naming_file_and_format() {
    match decode_rgb(TINY_GIF, &p("cat.jpg")) {
        Err(DataError::Unsupported { path, format, .. }) => {
            assert_eq!(path, p("cat.jpg"));
            assert_eq!(format, "GIF");
        }
        Ok(image) => assert_eq!((image.width, image.height), (1, 1)), // an OpenCV with GIF support
        Err(e) => panic!("{e}"),
    }
    let err = decode_rgb(b"not an image at all", &p("notes.jpg")).unwrap_err();
    assert!(
        matches!(&err, DataError::Unsupported { format, .. } if format == "unknown format"),
        "{err}"
    );
    assert!(err.to_string().contains("/data/notes.jpg"));
    // A JPEG cut after its header claims JPEG but does not decode.
    let mut jpeg = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x.jpg");
    encode_jpeg(&path, &gradient(16, 16), 90).unwrap();
    jpeg.extend_from_slice(&std::fs::read(&path).unwrap()[..20]);
    let err = decode_rgb(&jpeg, &p("cut.jpg")).unwrap_err();
    assert!(
        matches!(&err, DataError::Decode { path, .. } if path == &p("cut.jpg")),
        "{err}"
    );
    let err = decode_rgb(&[], &p("empty.jpg")).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let err = image_io::read_rgb(&tmp.path().join("missing.jpg")).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { path, .. } if path.ends_with("missing.jpg")),
        "{err}"
    );
}

#[test]
fn the_real_quirk_files_decode_or_fail_as_documented() {
    let root = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/oxford-pet-quirks/images"
    ));
    if !root.is_dir() {
        eprintln!(
            "skipped: {} does not exist (real-data check only)",
            root.display()
        );
        return;
    }
    let rgba = image_io::read_rgb(&root.join("Abyssinian_5.jpg")).unwrap();
    assert_eq!((rgba.width, rgba.height), (200, 150));
    assert_eq!(
        image_io::sniff_format(&root.join("Abyssinian_5.jpg")).unwrap(),
        ImageFormat::Png
    );
    let gif = root.join("Abyssinian_34.jpg");
    match image_io::read_rgb(&gif) {
        Err(DataError::Unsupported { path, format, .. }) => {
            assert_eq!((path, format.as_str()), (gif, "GIF"))
        }
        Ok(image) => assert_eq!((image.width, image.height), (250, 202)),
        Err(e) => panic!("{e}"),
    }
    let jpeg = image_io::read_rgb(&root.join("Abyssinian_82.jpg")).unwrap();
    assert_eq!((jpeg.width, jpeg.height), (331, 449));
}

#[test]
fn palette_masks_keep_their_indices() {
    let tmp = tempfile::tempdir().unwrap();
    let mask = Mask {
        width: 4,
        height: 2,
        data: vec![0, 1, 2, 21, 21, 2, 1, 0],
    };
    let mut palette = vec![[0u8, 0, 0]; 22];
    palette[1] = [128, 0, 0];
    palette[2] = [0, 128, 0];
    palette[21] = [224, 224, 192];
    let path = tmp.path().join("voc.png");
    encode_png_palette(&path, &mask, &palette).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(png_header(&bytes).unwrap().is_palette());
    assert_eq!(decode_mask(&bytes, &path).unwrap(), mask);
    // Through the image path, the same file gives colours, not indices.
    assert_eq!(&decode_rgb(&bytes, &path).unwrap().data[3..6], &[128, 0, 0]);
    // A 4-bit palette PNG: two pixels a byte, unpacked.
    let packed = png_bytes(
        3,
        2,
        png::ColorType::Indexed,
        png::BitDepth::Four,
        Some(vec![9; 16 * 3]),
        &[0x1F, 0x20, 0xE3, 0x40],
    );
    let m = decode_mask(&packed, &p("m4.png")).unwrap();
    assert_eq!(m.data, [1, 15, 2, 14, 3, 4]);
    // 1-bit greyscale.
    let bits = png_bytes(
        10,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::One,
        None,
        &[0b1010_0000, 0b1100_0000],
    );
    assert_eq!(
        decode_mask(&bits, &p("m1.png")).unwrap().data,
        [1, 0, 1, 0, 0, 0, 0, 0, 1, 1]
    );
}

#[test]
fn masks_that_cannot_hold_class_indices_are_refused_naming_the_file() {
    let rgb = png_bytes(
        1,
        1,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        None,
        &[1, 2, 3],
    );
    let err = decode_mask(&rgb, &p("colour.png")).unwrap_err();
    assert!(
        matches!(&err, DataError::Decode { path, reason } if path == &p("colour.png") && reason.contains("colour")),
        "{err}"
    );
    let deep = png_bytes(
        1,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        None,
        &[0, 1],
    );
    assert!(
        decode_mask(&deep, &p("deep.png"))
            .unwrap_err()
            .to_string()
            .contains("8 bits")
    );
    let tmp = tempfile::tempdir().unwrap();
    let jpg = tmp.path().join("m.jpg");
    encode_jpeg(&jpg, &gradient(8, 8), 90).unwrap();
    let err = image_io::read_mask(&jpg).unwrap_err();
    assert!(
        err.to_string().contains("m.jpg") && err.to_string().contains("lossy"),
        "{err}"
    );
    // A grey PNG mask is read as is.
    let grey = png_bytes(
        3,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        None,
        &[1, 2, 3],
    );
    assert_eq!(decode_mask(&grey, &p("t.png")).unwrap().data, [1, 2, 3]);
}

#[test]
fn reduced_decoding_picks_the_largest_factor_that_keeps_the_target() {
    assert_eq!(reduction_factor([375, 500], [128, 128]), 2);
    assert_eq!(reduction_factor([1200, 1600], [128, 128]), 8);
    assert_eq!(reduction_factor([600, 800], [128, 128]), 4);
    assert_eq!(reduction_factor([200, 300], [128, 128]), 1);
    assert_eq!(reduction_factor([256, 256], [128, 128]), 2);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.jpg");
    encode_jpeg(&path, &gradient(400, 300), 90).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(jpeg_size(&bytes), Some([300, 400]));
    let quarter = decode_rgb_for_target(&bytes, &path, [64, 64]).unwrap();
    assert_eq!((quarter.width, quarter.height), (100, 75));
    let full = decode_rgb_for_target(&bytes, &path, [200, 200]).unwrap();
    assert_eq!((full.width, full.height), (400, 300));
    // The reduced image looks like the full one shrunk.
    assert!((i32::from(quarter.data[0]) - i32::from(full.data[0])).abs() < 12);
}

#[test]
fn writers_are_atomic_and_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a.png");
    let mask = Mask {
        width: 2,
        height: 2,
        data: vec![1, 2, 3, 4],
    };
    encode_png(&path, PixelsRef::from(&mask)).unwrap();
    let mask2 = Mask {
        data: vec![4, 3, 2, 1],
        ..mask.clone()
    };
    encode_png(&path, PixelsRef::from(&mask2)).unwrap();
    assert_eq!(image_io::read_mask(&path).unwrap(), mask2);
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a.png"]);
    // Bad buffers are refused before anything is written.
    let bad = PixelsRef {
        width: 3,
        height: 3,
        channels: 1,
        data: &[0; 4],
    };
    assert!(encode_png(&tmp.path().join("b.png"), bad).is_err());
    assert!(!tmp.path().join("b.png").exists());
    // A missing folder is an error naming the temporary or final path.
    let err = encode_png(&tmp.path().join("no/such/c.png"), PixelsRef::from(&mask)).unwrap_err();
    assert!(err.to_string().contains("c.png"), "{err}");
}
