//! Views, layouts and interop of host tensors.

use magma_tensor::{MemoryFormat, Tensor, TensorError};

fn arange(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| i as f32).collect(), shape).unwrap()
}

#[test]
fn from_vec_checks_length() {
    let err = Tensor::from_vec(vec![1.0; 5], &[2, 3]).unwrap_err();
    assert_eq!(
        err,
        TensorError::DataLength {
            shape: vec![2, 3],
            expected: 6,
            actual: 5
        }
    );
}

#[test]
fn permute_and_narrow_are_views_with_correct_values() {
    let t = arange(&[2, 3, 4]);
    let p = t.permute(&[2, 0, 1]).unwrap();
    assert_eq!(p.shape(), &[4, 2, 3]);
    assert!(!p.is_contiguous());
    assert_eq!(p.get(&[3, 1, 2]).unwrap(), t.get(&[1, 2, 3]).unwrap());
    let n = t.narrow(1, 1, 2).unwrap();
    assert_eq!(n.shape(), &[2, 2, 4]);
    assert_eq!(n.to_vec().unwrap()[..4], [4.0, 5.0, 6.0, 7.0]);
    assert!(t.permute(&[0, 0, 1]).is_err());
    assert!(matches!(
        t.narrow(1, 2, 2),
        Err(TensorError::RangeOutOfBounds { .. })
    ));
}

#[test]
fn reshape_of_a_strided_view_copies_in_logical_order() {
    let t = arange(&[2, 3]);
    let tt = t.permute(&[1, 0]).unwrap();
    let r = tt.reshape(&[6]).unwrap();
    assert_eq!(r.to_vec().unwrap(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert!(matches!(t.reshape(&[4]), Err(TensorError::Reshape { .. })));
}

#[test]
fn channels_last_keeps_logical_values_and_nhwc_memory_order() {
    let t = arange(&[2, 3, 2, 2]);
    let cl = t.to_memory_format(MemoryFormat::ChannelsLast).unwrap();
    assert_eq!(cl.shape(), t.shape());
    assert_eq!(cl.memory_format(), Some(MemoryFormat::ChannelsLast));
    assert_eq!(cl.strides(), &[12, 1, 6, 3]);
    assert_eq!(cl.to_vec().unwrap(), t.to_vec().unwrap());
    let back = cl.contiguous().unwrap();
    assert_eq!(back.memory_format(), Some(MemoryFormat::Contiguous));
    assert_eq!(back.to_vec().unwrap(), t.to_vec().unwrap());
    assert!(matches!(
        arange(&[3, 4]).to_memory_format(MemoryFormat::ChannelsLast),
        Err(TensorError::FormatNeedsRank4 { .. })
    ));
}

#[test]
fn writes_never_leak_into_other_handles() {
    let a = arange(&[4]);
    let mut b = a.clone();
    b.host_data_mut().unwrap()[0] = 100.0;
    assert_eq!(a.to_vec().unwrap()[0], 0.0);
    assert_eq!(b.to_vec().unwrap()[0], 100.0);
    let mut view = a.narrow(0, 2, 2).unwrap();
    view.host_data_mut().unwrap()[0] = -1.0;
    assert_eq!(a.to_vec().unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
    assert_eq!(view.to_vec().unwrap(), vec![-1.0, 3.0]);
}

#[test]
fn ndarray_views_share_memory_and_round_trip() {
    let t = arange(&[2, 3]);
    let view = t.as_array_view().unwrap();
    assert_eq!(view.as_ptr(), t.host_data().unwrap().as_ptr());
    assert_eq!(view[[1, 2]], 5.0);
    let tt = t.permute(&[1, 0]).unwrap();
    let tv = tt.as_array_view().unwrap();
    assert_eq!(tv[[2, 1]], 5.0);
    let arr =
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 2]), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let ptr = arr.as_ptr();
    let from = Tensor::from_array(arr).unwrap();
    assert_eq!(
        from.host_data().unwrap().as_ptr(),
        ptr,
        "no copy for standard layout"
    );
    assert_eq!(from.to_array().unwrap()[[1, 0]], 3.0);
}

#[test]
fn into_vec_does_not_copy_an_unshared_tensor() {
    let t = arange(&[3, 3]);
    let ptr = t.host_data().unwrap().as_ptr();
    let v = t.into_vec().unwrap();
    assert_eq!(v.as_ptr(), ptr);
}

#[test]
fn item_get_and_dims_give_typed_errors() {
    let t = arange(&[2, 2]);
    assert!(t.item().is_err());
    assert_eq!(Tensor::scalar(2.5).item().unwrap(), 2.5);
    assert!(matches!(
        t.get(&[2, 0]),
        Err(TensorError::IndexOutOfBounds { .. })
    ));
    assert!(matches!(t.dims4("op"), Err(TensorError::Rank { .. })));
    assert_eq!(t.dims2("op").unwrap(), (2, 2));
}
