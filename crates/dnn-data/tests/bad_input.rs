//! Bad input not covered by the per-reader tests: truncated and corrupted PNG images and masks,
//! truncated or corrupted HDF5 data sets (refused by the checksum before HDF5 parses them), and
//! data sets written before checksums existed. Each is a clear error naming the file.

use std::path::{Path, PathBuf};

use dnn_data::image_io::{self, PixelsRef};
use dnn_data::{
    DataError, Hdf5Segmentation, Hdf5WriteOptions, Mask, RgbImage, SegmentationSample,
    SegmentationSource, write_segmentation_hdf5,
};

fn png(pixels: PixelsRef<'_>) -> Vec<u8> {
    image_io::encode_png_bytes(pixels, Path::new("x.png")).unwrap()
}

fn trimap() -> Mask {
    Mask {
        width: 8,
        height: 6,
        data: (0..48).map(|i| 1 + (i % 3) as u8).collect(),
    }
}

#[test]
fn truncated_and_corrupted_png_masks_are_decode_errors_naming_the_file() {
    let good = png((&trimap()).into());
    let path = Path::new("/data/annotations/trimaps/cat_1.png");
    assert_eq!(image_io::decode_mask(&good, path).unwrap(), trimap());
    // Cut at every length: never a panic, always an error naming the file (or, for a cut that
    // only loses the trailing IEND chunk, the complete image).
    for cut in 0..good.len() {
        match image_io::decode_mask(&good[..cut], path) {
            Err(e) => assert!(e.to_string().contains("cat_1.png"), "{cut}: {e}"),
            Ok(m) => {
                assert!(
                    cut >= good.len() - 12,
                    "cut at {cut} of {} decoded",
                    good.len()
                );
                assert_eq!(m, trimap());
            }
        }
    }
    // A flipped bit inside the compressed data: the chunk CRC catches it.
    let mut bad = good.clone();
    let idat = bad.windows(4).position(|w| w == b"IDAT").unwrap();
    bad[idat + 6] ^= 0x20;
    let err = image_io::decode_mask(&bad, path).unwrap_err();
    assert!(
        matches!(&err, DataError::Decode { path: p, .. } if p == path),
        "{err}"
    );
}

#[test]
fn a_png_header_claiming_more_pixels_than_the_file_holds_allocates_nothing() {
    // Found by the `mask` fuzz target: 60 bytes whose header claims 255 × 3.6e9 pixels; the
    // decoder asked for a 116 GB buffer before this check.
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/regressions/mask/png-header-claims-116gb"
    ))
    .unwrap();
    // The fuzz build of the png crate skips CRC checks; give the IHDR chunk its right CRC so
    // that this build, too, reaches the size check.
    let mut bytes = bytes;
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    let path = Path::new("/data/trimaps/huge.png");
    let err = image_io::decode_mask(&bytes, path).unwrap_err().to_string();
    assert!(
        err.contains("huge.png") && err.contains("cannot hold: truncated or corrupt"),
        "{err}"
    );
}

#[cfg(feature = "opencv")]
#[test]
fn truncated_and_corrupted_png_and_jpeg_images_are_errors_naming_the_file() {
    let image = RgbImage {
        width: 16,
        height: 16,
        data: (0..16 * 16 * 3).map(|i| (i * 5 % 251) as u8).collect(),
    };
    let png_bytes = png((&image).into());
    let path = Path::new("/data/images/dog_2.png");
    assert_eq!(image_io::decode_rgb(&png_bytes, path).unwrap(), image);
    for cut in [8, 20, 33, png_bytes.len() / 2] {
        let err = image_io::decode_rgb(&png_bytes[..cut], path).unwrap_err();
        assert!(err.to_string().contains("dog_2.png"), "{cut}: {err}");
    }
    let jpeg = image_io::encode_jpeg_bytes(&image, 90, Path::new("x.jpg")).unwrap();
    let path = Path::new("/data/images/dog_2.jpg");
    for cut in [2, 4, 100] {
        let err = image_io::decode_rgb(&jpeg[..cut], path).unwrap_err();
        assert!(err.to_string().contains("dog_2.jpg"), "{cut}: {err}");
    }
    // A JPEG with its entropy-coded data overwritten decodes to something or fails; it must not
    // crash, and a failure names the file.
    let mut garbled = jpeg.clone();
    let n = garbled.len();
    for b in &mut garbled[n / 2..n - 2] {
        *b = 0xff;
    }
    if let Err(e) = image_io::decode_rgb(&garbled, path) {
        assert!(e.to_string().contains("dog_2.jpg"), "{e}");
    }
}

struct Three;

impl SegmentationSource for Three {
    fn len(&self) -> usize {
        3
    }
    fn name(&self, index: usize) -> &str {
        ["a", "b", "c"][index]
    }
    fn class_names(&self) -> &[String] {
        static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        NAMES.get_or_init(dnn_data::pet_class_names)
    }
    fn load(&self, index: usize) -> dnn_data::Result<SegmentationSample> {
        let mut mask = trimap();
        mask.data.iter_mut().for_each(|v| *v -= 1);
        Ok(SegmentationSample {
            name: self.name(index).into(),
            image: RgbImage {
                width: 8,
                height: 6,
                data: (0..144).map(|i| (i * 3 + index) as u8).collect(),
            },
            mask,
        })
    }
    fn describe(&self) -> String {
        "three samples".into()
    }
}

fn written(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("pets.h5");
    write_segmentation_hdf5(&Three, &path, &Hdf5WriteOptions::new("test")).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

#[test]
fn damaged_hdf5_data_sets_are_refused_before_hdf5_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let (path, good) = written(dir.path());
    let set = Hdf5Segmentation::open(&path).unwrap();
    assert_eq!(set.len(), 3);
    assert_eq!(set.load(2).unwrap(), Three.load(2).unwrap());
    drop(set);
    // A flipped bit anywhere after the header: corrupted, with both digests.
    for at in [512, 700, good.len() / 2, good.len() - 1] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = Hdf5Segmentation::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("pets.h5") && err.contains("corrupted") && err.contains("SHA-256"),
            "{at}: {err}"
        );
    }
    // Truncated anywhere: the sizes.
    for cut in [good.len() - 1, good.len() / 2, 511, 10] {
        std::fs::write(&path, &good[..cut]).unwrap();
        let err = Hdf5Segmentation::open(&path).unwrap_err();
        assert!(
            matches!(&err, DataError::Truncated { path: p, actual_bytes, .. }
                if p == &path && *actual_bytes == cut as u64),
            "{cut}: {err}"
        );
    }
    // The header itself damaged.
    let mut bytes = good.clone();
    bytes[30] = b'!';
    std::fs::write(&path, &bytes).unwrap();
    let err = Hdf5Segmentation::open(&path).unwrap_err().to_string();
    assert!(err.contains("integrity header damaged"), "{err}");
    // Empty file.
    std::fs::write(&path, b"").unwrap();
    let err = Hdf5Segmentation::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("pets.h5") && err.contains("empty file"),
        "{err}"
    );
}

#[test]
fn a_failed_conversion_overwrites_nothing_and_a_v1_file_needs_consent() {
    let dir = tempfile::tempdir().unwrap();
    let (path, good) = written(dir.path());
    // A plain HDF5 file without the integrity header (as version 1 wrote them).
    let plain = dir.path().join("old.h5");
    {
        let f = hdf5::File::create(&plain).unwrap();
        let v: hdf5::types::VarLenUnicode = "magma-dnn-segmentation".parse().unwrap();
        f.new_attr::<hdf5::types::VarLenUnicode>()
            .create("schema")
            .unwrap()
            .write_scalar(&v)
            .unwrap();
    }
    if std::env::var("MAGMA_ALLOW_UNVERIFIED").is_err() {
        let err = Hdf5Segmentation::open(&plain).unwrap_err().to_string();
        assert!(
            err.contains("old.h5")
                && err.contains("no magma-dnn integrity header")
                && err.contains("MAGMA_ALLOW_UNVERIFIED=1"),
            "{err}"
        );
    }
    // An empty source writes nothing over an existing file.
    struct Empty;
    impl SegmentationSource for Empty {
        fn len(&self) -> usize {
            0
        }
        fn name(&self, _: usize) -> &str {
            ""
        }
        fn class_names(&self) -> &[String] {
            Three.class_names()
        }
        fn load(&self, _: usize) -> dnn_data::Result<SegmentationSample> {
            unreachable!()
        }
        fn describe(&self) -> String {
            "an empty data set".into()
        }
    }
    let err = write_segmentation_hdf5(&Empty, &path, &Hdf5WriteOptions::new("x"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no samples") && err.contains("an empty data set"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), good);
}
