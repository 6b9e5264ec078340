//! Reliability of training: damaged checkpoints are refused naming the file and the damage,
//! resuming falls back to the previous good checkpoint, non-finite values are reported with the
//! step and the layer (or skipped, up to a cap), and an empty data set writes nothing.

use std::path::{Path, PathBuf};

use dnn_data::{
    Hdf5WriteOptions, Mask, SegmentationSample, SegmentationSource, SyntheticConfig,
    render_synthetic_pet, write_segmentation_hdf5,
};
use dnn_layers::Module;
use dnn_ops::CpuBackend;
use unet::train::{AugmentKind, LossKind, TrainConfig, TrainRun};
use unet::{UNetConfig, UnetError, checkpoint};

struct Pets(Vec<SegmentationSample>, Vec<String>);

impl SegmentationSource for Pets {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn name(&self, index: usize) -> &str {
        &self.0[index].name
    }
    fn class_names(&self) -> &[String] {
        &self.1
    }
    fn load(&self, index: usize) -> dnn_data::Result<SegmentationSample> {
        Ok(self.0[index].clone())
    }
    fn describe(&self) -> String {
        "synthetic pets in memory".into()
    }
}

/// 12 samples of 16×16; `test_from` and later are the `test` split.
fn dataset(dir: &Path, test_from: usize) -> PathBuf {
    let config = SyntheticConfig {
        images: 12,
        size: [16, 16],
        size_jitter: 0.0,
        seed: 9,
        ..SyntheticConfig::default()
    };
    let samples = (0..12)
        .map(|i| {
            let (image, trimap) = render_synthetic_pet(&config, i);
            SegmentationSample {
                name: format!("pet_{i}"),
                mask: Mask {
                    data: trimap.data.iter().map(|v| v - 1).collect(),
                    ..trimap
                },
                image,
            }
        })
        .collect();
    let path = dir.join("pets.h5");
    let splits = (0..12).map(|i| u8::from(i >= test_from)).collect();
    let options =
        Hdf5WriteOptions::new("test").with_splits(vec!["trainval".into(), "test".into()], splits);
    write_segmentation_hdf5(&Pets(samples, dnn_data::pet_class_names()), &path, &options).unwrap();
    path
}

fn config(data: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        data: data.to_path_buf(),
        split: "trainval".into(),
        val_data: None,
        val_split: "test".into(),
        size: 16,
        loss: LossKind::Ce,
        epochs,
        batch: 4,
        lr: 3e-3,
        seed: 1,
        augment: AugmentKind::None,
        workers: 1,
        skip_nonfinite: 0,
    }
}

fn unet_config() -> UNetConfig {
    UNetConfig::new(3, 3).with_base(4).with_depth(1)
}

fn train(config: &TrainConfig, out: &Path, log: &mut Vec<String>) -> unet::Result<()> {
    let mut sink = |l: &str| log.push(l.to_string());
    let run = TrainRun {
        out: out.to_path_buf(),
        progress: false,
    };
    unet::train::train(
        config,
        &unet_config(),
        &run,
        &CpuBackend::new(),
        None,
        &mut sink,
    )?;
    Ok(())
}

#[test]
fn damaged_checkpoints_are_named_and_resume_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 8);
    let out = dir.path().join("run");
    train(&config(&data, 2), &out, &mut Vec::new()).unwrap();
    let last = out.join("last.h5");
    let prev = checkpoint::previous_path(&last);
    assert_eq!(prev, out.join("last.prev.h5"));
    assert_eq!(checkpoint::load(&last).unwrap().meta.epoch, 2);
    assert_eq!(checkpoint::load(&prev).unwrap().meta.epoch, 1);
    let good = std::fs::read(&last).unwrap();

    // One flipped bit anywhere: corrupted, named; resume falls back, saying why.
    for at in [600, good.len() / 2, good.len() - 1] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x10;
        std::fs::write(&last, &bytes).unwrap();
        let err = checkpoint::load(&last).unwrap_err().to_string();
        assert!(
            err.contains(&last.display().to_string()) && err.contains("corrupted"),
            "{at}: {err}"
        );
        let latest = checkpoint::load_latest(&out).unwrap();
        assert_eq!(latest.path, prev);
        assert_eq!(latest.checkpoint.meta.epoch, 1);
        assert_eq!(latest.skipped.len(), 1);
        assert!(
            latest.skipped[0].contains("corrupted"),
            "{:?}",
            latest.skipped
        );
    }
    // Truncated (a copy cut short), inside the header or after it.
    for cut in [good.len() - 100, 300, 0] {
        std::fs::write(&last, &good[..cut]).unwrap();
        let err = checkpoint::load(&last).unwrap_err().to_string();
        assert!(
            err.contains("last.h5") && (err.contains("truncated") || err.contains("empty")),
            "{cut}: {err}"
        );
        assert_eq!(checkpoint::load_latest(&out).unwrap().path, prev);
    }
    // Both damaged: an error naming both files.
    std::fs::write(&prev, &good[..1000]).unwrap();
    let err = checkpoint::load_latest(&out).unwrap_err().to_string();
    assert!(
        err.contains("no usable checkpoint")
            && err.contains("last.h5")
            && err.contains("last.prev.h5"),
        "{err}"
    );
    // A missing last.h5 with a good previous one (a crash between the two renames cannot
    // cause this, but a user's `rm` can).
    std::fs::remove_file(&last).unwrap();
    std::fs::write(&prev, &good).unwrap();
    let latest = checkpoint::load_latest(&out).unwrap();
    assert_eq!(latest.path, prev);
    assert!(latest.skipped[0].contains("no such file"));

    // Resuming from the fallback continues exactly: the run ends where an uninterrupted one
    // does. (Here prev holds epoch 2, copied from `good`.)
    let ck = latest.checkpoint;
    let mut cfg = ck.meta.train.clone();
    cfg.epochs = 3;
    let run = TrainRun {
        out: out.clone(),
        progress: false,
    };
    unet::train::train(
        &cfg,
        &ck.meta.unet,
        &run,
        &CpuBackend::new(),
        Some((&ck, &prev)),
        &mut |_| {},
    )
    .unwrap();
    let reference = dir.path().join("reference");
    train(&config(&data, 3), &reference, &mut Vec::new()).unwrap();
    let weights = |p: &Path| {
        let m = checkpoint::load(p).unwrap().build_model(p).unwrap();
        let mut v = Vec::new();
        m.visit_parameters(&mut |p| v.push(p.value().to_vec().unwrap()));
        v
    };
    assert_eq!(weights(&last), weights(&reference.join("last.h5")));
}

#[test]
fn a_checkpoint_without_checksum_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 8);
    let out = dir.path().join("run");
    train(&config(&data, 1), &out, &mut Vec::new()).unwrap();
    // The same content as a plain HDF5 file (what version 1 wrote): the header stripped.
    let bytes = std::fs::read(out.join("last.h5")).unwrap();
    let plain = dir.path().join("plain.h5");
    // Not a valid HDF5 file once the user block is gone (its addresses are relative to the
    // user block), but it starts with the HDF5 signature as version-1 files do.
    std::fs::write(&plain, &bytes[512..]).unwrap();
    if std::env::var("MAGMA_ALLOW_UNVERIFIED").is_err() {
        let err = checkpoint::load(&plain).unwrap_err().to_string();
        assert!(
            err.contains("plain.h5") && err.contains("MAGMA_ALLOW_UNVERIFIED"),
            "{err}"
        );
    }
    std::fs::write(&plain, b"junk that is not HDF5").unwrap();
    let err = checkpoint::load(&plain).unwrap_err().to_string();
    assert!(
        err.contains("plain.h5") && err.contains("not a magma-dnn"),
        "{err}"
    );
}

/// Fills the first parameter of `path` whose name ends with `suffix` with `value`.
fn poison(path: &Path, suffix: &str, value: f32) -> String {
    let ck = checkpoint::load(path).unwrap();
    let mut model = ck.build_model(path).unwrap();
    let mut name = String::new();
    dnn_layers::try_for_each_parameter_mut(&mut model, |p| {
        if name.is_empty() && p.name().ends_with(suffix) {
            name = p.name().to_string();
            let poisoned = dnn_ops::Tensor::full(p.value().shape(), value);
            p.set(poisoned)?;
        }
        Ok(())
    })
    .unwrap();
    let mut optimizer = dnn_layers::optim::Adam::new(ck.meta.train.lr);
    ck.restore_optimizer(&model, &mut optimizer).unwrap();
    checkpoint::save(path, &model, &optimizer, &ck.meta).unwrap();
    name
}

fn resume(path: &Path, skip: usize, log: &mut Vec<String>) -> UnetError {
    let ck = checkpoint::load(path).unwrap();
    let mut cfg = ck.meta.train.clone();
    cfg.epochs = ck.meta.epoch + 1;
    cfg.skip_nonfinite = skip;
    cfg.batch = 2; // 4 steps an epoch
    let run = TrainRun {
        out: path.parent().unwrap().to_path_buf(),
        progress: false,
    };
    let mut sink = |l: &str| log.push(l.to_string());
    unet::train::train(
        &cfg,
        &ck.meta.unet,
        &run,
        &CpuBackend::new(),
        Some((&ck, path)),
        &mut sink,
    )
    .unwrap_err()
}

#[test]
fn non_finite_values_name_the_step_and_the_layer_and_can_be_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 8);
    let out = dir.path().join("run");
    train(&config(&data, 1), &out, &mut Vec::new()).unwrap();
    let last = out.join("last.h5");
    let before = std::fs::read(&last).unwrap();

    // Head weights so large that the logits overflow to ±Inf.
    let name = poison(&last, "head/weight", 3.0e38);
    assert_eq!(name, "head/weight");
    let err = resume(&last, 0, &mut Vec::new()).to_string();
    assert!(
        err.contains("non-finite loss")
            && err.contains("epoch 2, step 1")
            && err.contains("first non-finite value: conv2d output in layer head"),
        "{name}: {err}"
    );
    // A huge batch-norm scale: the loss stays finite, the gradients do not.
    std::fs::write(&last, &before).unwrap();
    let name = poison(&last, "bn2/gamma", 3.0e38);
    let err = resume(&last, 0, &mut Vec::new()).to_string();
    assert!(
        err.contains("non-finite gradient")
            && err.contains("epoch 2, step 1")
            && err.contains(" of layer "),
        "{name}: {err}"
    );
    // A NaN in the weights themselves.
    std::fs::write(&last, &before).unwrap();
    let name = poison(&last, "head/bias", f32::NAN);
    let layer = name.rsplit_once('/').unwrap().0.to_string();
    let err = resume(&last, 0, &mut Vec::new()).to_string();
    assert!(
        err.contains("step 1") && err.contains(&format!("the weights of layer {layer}")),
        "{name}: {err}"
    );
    // --skip-nonfinite 2: two batches skipped with warnings, the third stops the run.
    let mut log = Vec::new();
    let err = resume(&last, 2, &mut log).to_string();
    let warnings: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("warning: skipped"))
        .collect();
    assert_eq!(warnings.len(), 2, "{log:?}");
    assert!(
        warnings[0].contains("step 1") && warnings[1].contains("step 2"),
        "{warnings:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("stopping: 3 batches in a row")),
        "{log:?}"
    );
    assert!(err.contains("step 3"), "{err}");
    // Nothing was checkpointed by the failed runs.
    assert_eq!(checkpoint::load(&last).unwrap().meta.epoch, 1);
}

#[test]
fn an_empty_training_split_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 0); // every sample in `test`
    let out = dir.path().join("run");
    let err = train(&config(&data, 1), &out, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("training split is empty") && err.contains("pets.h5"),
        "{err}"
    );
    assert!(!out.exists());
}

/// `config.loss` made NaN on its `poisoned`-th call (1-based; evaluation calls count too).
struct NanOnCall {
    inner: Box<dyn dnn_layers::loss::Loss>,
    calls: std::sync::atomic::AtomicUsize,
    poisoned: usize,
}

impl dnn_layers::loss::Loss for NanOnCall {
    fn compute(
        &self,
        g: &dnn_ops::Graph,
        output: dnn_ops::Var,
        target: &dnn_ops::Tensor,
    ) -> dnn_layers::Result<dnn_ops::Var> {
        let l = self.inner.compute(g, output, target)?;
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if call == self.poisoned {
            return Ok(g.scale(l, f32::NAN)?);
        }
        Ok(l)
    }
    fn name(&self) -> String {
        format!("{} (NaN on call {})", self.inner.name(), self.poisoned)
    }
}

/// Every parameter and buffer of `model`, as bits.
fn state_bits(model: &unet::UNet) -> Vec<Vec<u32>> {
    let bits = |t: &dnn_ops::Tensor| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect();
    let mut out = Vec::new();
    model.visit_parameters(&mut |p| out.push(bits(p.value())));
    model.visit_buffers(&mut |_, t| out.push(bits(t)));
    out
}

#[test]
fn a_skipped_batch_leaves_no_trace_and_training_goes_on() {
    use dnn_layers::optim::Optimizer;
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 8);
    // Two steps of 4 images: poison the first (its update is skipped while the second is
    // already queued, which must then be queued again from the restored statistics) or the
    // second (the last of the epoch, nothing queued behind it).
    for (poisoned, kept) in [(1usize, 1usize), (2, 0)] {
        let mut config = config(&data, 1);
        config.skip_nonfinite = 1;
        let out = dir.path().join(format!("skip-{poisoned}"));
        let mut log = Vec::new();
        let mut sink = |l: &str| log.push(l.to_string());
        let run = TrainRun {
            out: out.clone(),
            progress: false,
        };
        let loss = NanOnCall {
            inner: config.loss.build(),
            calls: Default::default(),
            poisoned,
        };
        unet::train::train_with_loss(
            &config,
            &unet_config(),
            &run,
            &CpuBackend::new(),
            None,
            Box::new(loss),
            &mut sink,
        )
        .unwrap();
        let warnings: Vec<&String> = log
            .iter()
            .filter(|l| l.starts_with("warning: skipped"))
            .collect();
        assert_eq!(warnings.len(), 1, "{log:?}");
        assert!(
            warnings[0].contains(&format!("step {poisoned}")),
            "{warnings:?}"
        );

        // The reference: the same model trained on the kept batch alone, by hand.
        let be = CpuBackend::new();
        let (train_src, _) = unet::train::open_sources(&config).unwrap();
        let loader = unet::train::loader(train_src, &config, true).unwrap();
        let batch = loader.epoch(1).nth(kept).unwrap().unwrap();
        let mut model = unet::UNet::new(
            &unet_config(),
            &mut magma_tensor::SeededRng::new(config.seed),
        )
        .unwrap();
        let mut adam = dnn_layers::optim::Adam::new(config.lr);
        let g = dnn_ops::Graph::new(&be);
        let x = g.input(batch.images.clone());
        let logits = model.forward(&g, x, dnn_layers::Mode::Train).unwrap();
        let l = config
            .loss
            .build()
            .compute(&g, logits, &batch.masks)
            .unwrap();
        let grads = g.backward(l).unwrap();
        drop(g);
        adam.step(&be, &mut model, &grads).unwrap();

        let last = out.join("last.h5");
        let checkpoint = checkpoint::load(&last).unwrap();
        assert_eq!(checkpoint.optimizer_step, 1, "poisoned call {poisoned}");
        let mut trained =
            unet::UNet::new(&unet_config(), &mut magma_tensor::SeededRng::new(99)).unwrap();
        checkpoint.restore_model(&mut trained, &last).unwrap();
        assert!(
            state_bits(&trained) == state_bits(&model),
            "poisoned call {poisoned}: the run's weights and statistics differ from one step on \
             the kept batch"
        );
        assert_eq!(checkpoint.meta.history.len(), 1);
        assert!(checkpoint.meta.history[0].train_loss.is_finite());
    }
}
