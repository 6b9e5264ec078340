//! `LabeledImages`: sizes, subsets and mini-batches copy exactly the chosen samples.

mod common;

use common::{bytes, idx_images, idx_labels, scaled, write};
use dnn_data::{DataError, LabeledImages, Split, Tensor, load_mnist};
use magma_tensor::TensorError;

/// A set of 6 MNIST-shaped samples with labels 0..6 and known pixels.
fn six() -> (LabeledImages, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let pixels = bytes(6 * 784, 41);
    write(
        dir.path(),
        "train-images-idx3-ubyte",
        &idx_images(6, 28, 28, &pixels),
    );
    write(
        dir.path(),
        "train-labels-idx1-ubyte",
        &idx_labels(&[0, 1, 2, 3, 4, 5]),
    );
    (load_mnist(dir.path(), Split::Train).unwrap(), pixels)
}

fn sample(pixels: &[u8], i: usize) -> Vec<f32> {
    pixels[i * 784..(i + 1) * 784]
        .iter()
        .map(|&b| scaled(b))
        .collect()
}

#[test]
fn sizes() {
    let (set, _) = six();
    assert_eq!(set.len(), 6);
    assert!(!set.is_empty());
    assert_eq!(set.classes(), 10);
    assert_eq!(set.image_shape(), [1, 28, 28]);
    let empty = set.subset(&[]).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.images.shape(), &[0, 1, 28, 28]);
}

#[test]
fn subset_copies_the_chosen_samples_in_order() {
    let (set, pixels) = six();
    let sub = set.subset(&[4, 1, 4]).unwrap();
    assert_eq!(sub.labels, vec![4, 1, 4]);
    assert_eq!(sub.images.shape(), &[3, 1, 28, 28]);
    assert_eq!(sub.class_names, set.class_names);
    let want: Vec<f32> = [4, 1, 4].iter().flat_map(|&i| sample(&pixels, i)).collect();
    assert_eq!(sub.images.to_vec().unwrap(), want);
}

#[test]
fn batch_returns_images_and_f32_labels() {
    let (set, pixels) = six();
    let (images, labels): (Tensor, Tensor) = set.batch(&[5, 0]).unwrap();
    assert_eq!(images.shape(), &[2, 1, 28, 28]);
    assert_eq!(labels.shape(), &[2]);
    assert_eq!(labels.to_vec().unwrap(), vec![5.0, 0.0]);
    let want: Vec<f32> = [5, 0].iter().flat_map(|&i| sample(&pixels, i)).collect();
    assert_eq!(images.to_vec().unwrap(), want);
}

#[test]
fn out_of_range_index_is_an_error() {
    let (set, _) = six();
    for result in [set.subset(&[0, 6]).map(|_| ()), set.batch(&[7]).map(|_| ())] {
        match result.unwrap_err() {
            DataError::Tensor(TensorError::IndexOutOfBounds { index, shape }) => {
                assert_eq!(shape, vec![6]);
                assert!(index[0] >= 6);
            }
            other => panic!("expected an index error, got {other:?}"),
        }
    }
}
