#![cfg(feature = "opencv")]
//! Training end to end on a tiny synthetic Pet-layout set: the loss falls, every artefact is
//! written, a resumed run ends bit-identical to an uninterrupted one, and evaluation of the
//! checkpoint reproduces the last epoch's metrics.

use std::path::Path;

use dnn_ops::CpuBackend;
use unet::train::{AugmentKind, LossKind, TrainConfig, TrainRun};
use unet::{UNetConfig, checkpoint};

fn tiny_dataset(dir: &Path) {
    let config = dnn_data::SyntheticConfig {
        images: 24,
        size: [40, 40],
        test_fraction: 0.25,
        seed: 3,
        ..dnn_data::SyntheticConfig::default()
    };
    dnn_data::generate_synthetic_pets(dir, &config).unwrap();
}

fn config(data: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        data: data.to_path_buf(),
        split: "trainval".into(),
        val_data: None,
        val_split: "test".into(),
        size: 32,
        loss: LossKind::Ce,
        epochs,
        batch: 6,
        lr: 3e-3,
        seed: 11,
        augment: AugmentKind::Hflip,
        workers: 1,
        skip_nonfinite: 0,
    }
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let ck = checkpoint::load(path).unwrap();
    let model = ck.build_model(path).unwrap();
    let mut out = Vec::new();
    dnn_layers::Module::visit_parameters(&model, &mut |p| {
        out.push((p.name().to_string(), p.value().to_vec().unwrap()))
    });
    out
}

#[test]
fn train_writes_artefacts_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pets");
    tiny_dataset(&data);
    let unet = UNetConfig::new(3, 3).with_base(4).with_depth(2);
    let be = CpuBackend::new();
    let mut log = |_: &str| {};

    let full = dir.path().join("full");
    let summary = unet::train::train(
        &config(&data, 3),
        &unet,
        &TrainRun {
            out: full.clone(),
            progress: false,
        },
        &be,
        None,
        &mut log,
    )
    .unwrap();
    assert_eq!(summary.history.len(), 3);
    assert!(
        summary.history[2].train_loss < summary.history[0].train_loss,
        "{:?}",
        summary.history
    );
    for f in [
        "metrics.json",
        "best.h5",
        "last.h5",
        "curves.png",
        "predictions.png",
    ] {
        assert!(
            full.join(f)
                .metadata()
                .map(|m| m.len() > 0)
                .unwrap_or(false),
            "{f} missing"
        );
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["epochs"].as_array().unwrap().len(), 3);
    assert_eq!(metrics["epochs"][2]["iou"].as_array().unwrap().len(), 3);
    assert!(
        summary
            .final_line()
            .starts_with("final: epoch=3 pixel_acc=")
    );

    // 2 epochs, then resume to 3: the same weights, bit for bit.
    let part = dir.path().join("part");
    unet::train::train(
        &config(&data, 2),
        &unet,
        &TrainRun {
            out: part.clone(),
            progress: false,
        },
        &be,
        None,
        &mut log,
    )
    .unwrap();
    let last = part.join("last.h5");
    let ck = checkpoint::load(&last).unwrap();
    assert_eq!(ck.meta.epoch, 2);
    let mut cfg = ck.meta.train.clone();
    cfg.epochs = 3;
    let resumed = unet::train::train(
        &cfg,
        &ck.meta.unet,
        &TrainRun {
            out: part.clone(),
            progress: false,
        },
        &be,
        Some((&ck, &last)),
        &mut log,
    )
    .unwrap();
    assert_eq!(resumed.history.len(), 3);
    assert_eq!(
        weights(&part.join("last.h5")),
        weights(&full.join("last.h5"))
    );
    assert_eq!(resumed.history[2].miou, summary.history[2].miou);

    // Evaluating the final checkpoint on the validation split gives the last epoch's metrics.
    let source: std::sync::Arc<dyn dnn_data::SegmentationSource> =
        dnn_data::open_segmentation(&data, "test").unwrap().into();
    let ck = checkpoint::load(&full.join("last.h5")).unwrap();
    let mut model = ck.build_model(&full.join("last.h5")).unwrap();
    let loader = unet::train::loader(source, &ck.meta.train, false).unwrap();
    let report = unet::metrics::evaluate(
        &mut model,
        &be,
        &loader,
        ck.meta.train.loss.build().as_ref(),
    )
    .unwrap();
    assert!((report.miou - summary.history[2].miou).abs() < 1e-12);
    let line = report.json_line();
    assert!(line.starts_with("{\"images\":6,\"pixel_acc\":"), "{line}");
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed["iou"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_options_and_corrupt_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pets");
    tiny_dataset(&data);
    let be = CpuBackend::new();
    let mut log = |_: &str| {};
    let run = TrainRun {
        out: dir.path().join("out"),
        progress: false,
    };
    let unet = UNetConfig::new(3, 3).with_base(4).with_depth(2);
    for bad in [
        TrainConfig {
            epochs: 0,
            ..config(&data, 1)
        },
        TrainConfig {
            batch: 0,
            ..config(&data, 1)
        },
        TrainConfig {
            lr: -1.0,
            ..config(&data, 1)
        },
    ] {
        assert!(matches!(
            unet::train::train(&bad, &unet, &run, &be, None, &mut log),
            Err(unet::UnetError::Config(_))
        ));
    }
    let wrong_classes = UNetConfig::new(3, 5).with_base(4).with_depth(2);
    let err = unet::train::train(&config(&data, 1), &wrong_classes, &run, &be, None, &mut log)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 classes"), "{err}");
    let missing = unet::train::train(
        &TrainConfig {
            data: dir.path().join("nowhere"),
            ..config(&data, 1)
        },
        &unet,
        &run,
        &be,
        None,
        &mut log,
    )
    .unwrap_err()
    .to_string();
    assert!(missing.contains("nowhere"), "{missing}");
    // A truncated checkpoint is refused with its path named.
    unet::train::train(&config(&data, 1), &unet, &run, &be, None, &mut log).unwrap();
    let last = run.out.join("last.h5");
    let bytes = std::fs::read(&last).unwrap();
    let cut = dir.path().join("cut.h5");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load(&cut).unwrap_err().to_string();
    assert!(err.contains("cut.h5"), "{err}");
}
