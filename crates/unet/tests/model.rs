//! The U-Net's architecture: parameter counts against PyTorch, any input size, ResU-Net.

use dnn_layers::{Mode, Module};
use dnn_ops::{CpuBackend, Graph, Tensor};
use magma_tensor::SeededRng;
use unet::{BlockKind, UNet, UNetConfig, UpsampleKind};

#[test]
fn base_64_depth_4_has_exactly_the_pytorch_reference_parameter_count() {
    // ../shared/reference/pytorch-unet/peer_pytorch_unet.py: UNet(cin=3, ncls=3, base=64) has
    // 31,037,763 parameters (3×3 convs without bias before BN, transposed convs and head with bias).
    let net = UNet::new(
        &UNetConfig::new(3, 3).with_base(64).with_depth(4),
        &mut SeededRng::new(0),
    )
    .unwrap();
    assert_eq!(net.parameter_count(), 31_037_763);
}

#[test]
fn any_input_size_gives_a_same_size_pixelwise_output() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(1);
    for (cfg, h, w) in [
        (UNetConfig::new(3, 3).with_base(4).with_depth(3), 37, 50),
        (
            UNetConfig::new(3, 3)
                .with_base(4)
                .with_depth(2)
                .with_upsample(UpsampleKind::Bilinear),
            17,
            16,
        ),
        (
            UNetConfig::new(1, 2)
                .with_base(4)
                .with_depth(2)
                .with_block(BlockKind::Residual),
            9,
            13,
        ),
    ] {
        let mut net = UNet::new(&cfg, &mut rng).unwrap();
        let g = Graph::inference(&be);
        let x = g.input(Tensor::ones(&[2, cfg.in_channels, h, w]));
        let y = net.forward(&g, x, Mode::Eval).unwrap();
        assert_eq!(g.shape(y), vec![2, cfg.classes, h, w], "{cfg:?}");
    }
}

#[test]
fn bad_configurations_and_inputs_are_clear_errors() {
    let mut rng = SeededRng::new(2);
    assert!(UNet::new(&UNetConfig::new(3, 3).with_depth(0), &mut rng).is_err());
    assert!(UNet::new(&UNetConfig::new(3, 3).with_dropout(1.0), &mut rng).is_err());
    let mut net = UNet::new(&UNetConfig::new(3, 3).with_base(2).with_depth(1), &mut rng).unwrap();
    let be = CpuBackend::new();
    let g = Graph::inference(&be);
    let x = g.input(Tensor::ones(&[1, 1, 8, 8]));
    let err = net.forward(&g, x, Mode::Eval).unwrap_err().to_string();
    assert!(err.contains("3 input channels"), "{err}");
}

#[test]
fn resunet_and_bilinear_variants_name_their_parameters_by_path() {
    let mut rng = SeededRng::new(3);
    let net = UNet::new(
        &UNetConfig::new(3, 3)
            .with_base(4)
            .with_depth(2)
            .with_block(BlockKind::Residual)
            .with_upsample(UpsampleKind::Bilinear),
        &mut rng,
    )
    .unwrap();
    let mut names = Vec::new();
    net.visit_parameters(&mut |p| names.push(p.name().to_string()));
    for want in [
        "down1/conv1/weight",
        "down1/proj/weight",
        "bottleneck/bn2/gamma",
        "up1/reduce/weight",
        "head/bias",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
}
