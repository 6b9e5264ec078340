//! Sharding a loader across data-parallel ranks: disjoint shards with equal step counts whose
//! step-wise union is the batch of one process with the global batch size.

use std::sync::Arc;

use dnn_data::{
    LoaderConfig, Mask, RgbImage, SegmentationLoader, SegmentationSample, SegmentationSource,
    pet_class_names,
};

/// `n` 6×6 samples whose pixels depend on the index.
struct Mock {
    names: Vec<String>,
    classes: Vec<String>,
}

impl Mock {
    fn new(n: usize) -> Self {
        Self {
            names: (0..n).map(|i| format!("pet_{i}")).collect(),
            classes: pet_class_names(),
        }
    }
}

impl SegmentationSource for Mock {
    fn len(&self) -> usize {
        self.names.len()
    }

    fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    fn class_names(&self) -> &[String] {
        &self.classes
    }

    fn load(&self, index: usize) -> dnn_data::Result<SegmentationSample> {
        let (w, h) = (6, 6);
        Ok(SegmentationSample {
            name: self.names[index].clone(),
            image: RgbImage {
                width: w,
                height: h,
                data: (0..w * h * 3)
                    .map(|p| ((p + index * 13) % 256) as u8)
                    .collect(),
            },
            mask: Mask {
                width: w,
                height: h,
                data: (0..w * h).map(|p| ((p + index) % 3) as u8).collect(),
            },
        })
    }

    fn describe(&self) -> String {
        format!("mock source, {} samples", self.names.len())
    }
}

fn loader(n: usize, batch: usize) -> SegmentationLoader {
    let config = LoaderConfig {
        workers: 1,
        shuffle: true,
        seed: 9,
        ..LoaderConfig::new(batch, [6, 6])
    };
    SegmentationLoader::new(Arc::new(Mock::new(n)), config).unwrap()
}

fn names(loader: &SegmentationLoader, epoch: u64) -> Vec<Vec<String>> {
    loader.epoch(epoch).map(|b| b.unwrap().names).collect()
}

#[test]
fn shards_are_disjoint_equal_and_add_up_to_the_global_batches() {
    let (n, b, ranks) = (23, 2, 3);
    let global = loader(n, b * ranks);
    let shards: Vec<SegmentationLoader> = (0..ranks)
        .map(|r| loader(n, b).sharded(r, ranks).unwrap())
        .collect();
    for epoch in [1, 2] {
        let whole = names(&global, epoch);
        let parts: Vec<Vec<Vec<String>>> = shards.iter().map(|s| names(s, epoch)).collect();
        // 23 samples, global batch 6: 3 full global batches, 5 samples dropped.
        for (r, part) in parts.iter().enumerate() {
            assert_eq!(part.len(), 3, "rank {r}");
            assert_eq!(shards[r].batches_per_epoch(), 3);
            assert_eq!(shards[r].samples_per_epoch(), 6);
            assert!(part.iter().all(|batch| batch.len() == b));
        }
        for step in 0..3 {
            let union: Vec<String> = parts.iter().flat_map(|p| p[step].clone()).collect();
            assert_eq!(union, whole[step], "epoch {epoch} step {step}");
        }
    }
    // Different epochs shuffle differently.
    assert_ne!(names(&shards[0], 1), names(&shards[0], 2));
}

#[test]
fn one_rank_is_the_unsharded_loader_and_bad_shards_are_refused() {
    let plain = loader(7, 2);
    let one = loader(7, 2).sharded(0, 1).unwrap();
    assert_eq!(one.shard(), None);
    assert_eq!(names(&plain, 3), names(&one, 3));
    assert_eq!(one.batches_per_epoch(), 4);

    let err = loader(7, 2).sharded(2, 2).unwrap_err().to_string();
    assert!(err.contains("rank 2"), "{err}");
    let err = loader(7, 4).sharded(0, 2).unwrap_err().to_string();
    assert!(err.contains("no full global batch of 8"), "{err}");
}
