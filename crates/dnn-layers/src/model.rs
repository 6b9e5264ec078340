//! A trainable model: a network, a loss, an optimizer and a backend, with `fit`, `evaluate` and
//! `predict` (MagmaDNN's `NeuralNetwork`, Keras' `Model`).

use std::path::Path;
use std::time::Instant;

use dnn_ops::{Backend, Graph, Tensor};
use magma_tensor::SeededRng;

use crate::dataset::Dataset;
use crate::error::{LayerError, Result};
use crate::loss::Loss;
use crate::metrics::count_correct;
use crate::module::{Mode, Module};
use crate::optim::{LrSchedule, Optimizer};
use crate::progress;
use crate::weights;

/// Settings of [`Model::fit`].
#[derive(Debug, Clone)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Show a progress bar per epoch (on a terminal).
    pub progress: bool,
    /// Print a summary line per epoch.
    pub verbose: bool,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 32,
            shuffle: true,
            seed: 0,
            progress: true,
            verbose: true,
        }
    }
}

/// Metrics of one pass over a dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f32,
    /// Fraction of correct argmax predictions (per sample, or per pixel for 4-D outputs);
    /// `None` when the targets are not class labels.
    pub accuracy: Option<f32>,
    pub samples: usize,
    pub seconds: f64,
}

/// One epoch of [`Model::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train: Evaluation,
    pub validation: Option<Evaluation>,
    pub learning_rate: f32,
}

impl EpochRecord {
    /// The per-epoch summary line.
    pub fn summary(&self, epochs: usize) -> String {
        let mut s = format!(
            "epoch {:>3}/{epochs}  loss {:.4}",
            self.epoch, self.train.loss
        );
        if let Some(a) = self.train.accuracy {
            s += &format!("  acc {a:.4}");
        }
        if let Some(v) = &self.validation {
            s += &format!("  val_loss {:.4}", v.loss);
            if let Some(a) = v.accuracy {
                s += &format!("  val_acc {a:.4}");
            }
        }
        s + &format!(
            "  lr {:.2e}  {:.1} s",
            self.learning_rate, self.train.seconds
        )
    }
}

/// The per-epoch records of a fit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
}

/// A network with its loss, optimizer, optional schedule and backend.
pub struct Model<M: Module> {
    pub network: M,
    loss: Box<dyn Loss>,
    optimizer: Box<dyn Optimizer>,
    schedule: Option<Box<dyn LrSchedule>>,
    backend: Box<dyn Backend>,
}

fn batches(order: &[usize], batch_size: usize) -> impl Iterator<Item = &[usize]> {
    order.chunks(batch_size.max(1))
}

impl<M: Module> Model<M> {
    pub fn new(
        network: M,
        loss: impl Loss + 'static,
        optimizer: impl Optimizer + 'static,
        backend: impl Backend + 'static,
    ) -> Self {
        Self {
            network,
            loss: Box::new(loss),
            optimizer: Box::new(optimizer),
            schedule: None,
            backend: Box::new(backend),
        }
    }

    pub fn with_schedule(mut self, schedule: impl LrSchedule + 'static) -> Self {
        self.schedule = Some(Box::new(schedule));
        self
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }

    /// One optimisation step on a batch; returns the loss and the output (logits).
    pub fn train_step(
        &mut self,
        inputs: &Tensor,
        targets: &Tensor,
        epoch: usize,
        step: usize,
    ) -> Result<(f32, Tensor)> {
        let backend = self.backend.as_ref();
        let g = Graph::new(backend);
        let x = g.input(inputs.clone());
        let out = self.network.forward(&g, x, Mode::Train)?;
        let loss = self.loss.compute(&g, out, targets)?;
        let value = g.value(loss).item()?;
        if !value.is_finite() {
            return Err(LayerError::NonFiniteLoss {
                epoch,
                step,
                value,
                hint: "lower the learning rate or check the inputs for NaN".to_string(),
            });
        }
        // Taken before the reverse pass, which releases the tape's intermediate values.
        let output = g.value(out);
        let grads = g.backward(loss)?;
        let mut bad = None;
        self.network.visit_parameters(&mut |p| {
            if bad.is_none()
                && let Some(gr) = grads.param(p.id())
                && gr.has_non_finite().unwrap_or(true)
            {
                bad = Some(p.name().to_string());
            }
        });
        if let Some(param) = bad {
            return Err(LayerError::NonFiniteGradient { param, epoch, step });
        }
        drop(g);
        self.optimizer.step(backend, &mut self.network, &grads)?;
        Ok((value, output))
    }

    /// Trains for `config.epochs` epochs, evaluating on `validation` after each.
    pub fn fit(
        &mut self,
        train: &dyn Dataset,
        validation: Option<&dyn Dataset>,
        config: &FitConfig,
    ) -> Result<History> {
        if train.is_empty() {
            return Err(LayerError::Data("the training set is empty".to_string()));
        }
        if config.batch_size == 0 || config.epochs == 0 {
            return Err(LayerError::Data(format!(
                "epochs ({}) and batch size ({}) must be positive",
                config.epochs, config.batch_size
            )));
        }
        let mut rng = SeededRng::new(config.seed);
        let initial_lr = self.optimizer.learning_rate();
        let mut history = History::default();
        let mut order: Vec<usize> = (0..train.len()).collect();
        for epoch in 1..=config.epochs {
            let started = Instant::now();
            if config.shuffle {
                rng.shuffle(&mut order);
            }
            let steps = order.len().div_ceil(config.batch_size);
            let pb = progress::bar(
                steps as u64,
                format!("epoch {epoch}/{}", config.epochs),
                config.progress,
            );
            let (mut loss_sum, mut seen, mut correct, mut counted) =
                (0.0f64, 0usize, 0usize, 0usize);
            for (step, idx) in batches(&order, config.batch_size).enumerate() {
                let (x, y) = train.batch(idx)?;
                let (loss, out) = self.train_step(&x, &y, epoch, step + 1)?;
                loss_sum += loss as f64 * idx.len() as f64;
                seen += idx.len();
                if let Some((c, n)) = count_correct(&out, &y, None)? {
                    correct += c;
                    counted += n;
                }
                pb.inc(1);
                pb.set_message(format!("loss {:.4}", loss_sum / seen as f64));
            }
            pb.finish_and_clear();
            let train_eval = Evaluation {
                loss: (loss_sum / seen as f64) as f32,
                accuracy: (counted > 0).then(|| correct as f32 / counted as f32),
                samples: seen,
                seconds: started.elapsed().as_secs_f64(),
            };
            let validation = validation
                .map(|v| self.evaluate(v, config.batch_size))
                .transpose()?;
            let record = EpochRecord {
                epoch,
                train: train_eval,
                validation,
                learning_rate: self.optimizer.learning_rate(),
            };
            if config.verbose {
                println!("{}", record.summary(config.epochs));
            }
            if let Some(schedule) = &mut self.schedule {
                let metric = validation.map(|v| v.loss).unwrap_or(train_eval.loss);
                let lr = schedule.next_lr(
                    epoch,
                    initial_lr,
                    self.optimizer.learning_rate(),
                    Some(metric),
                );
                self.optimizer.set_learning_rate(lr);
            }
            history.epochs.push(record);
        }
        Ok(history)
    }

    /// Loss and accuracy over a whole dataset (evaluation mode, nothing recorded).
    pub fn evaluate(&mut self, data: &dyn Dataset, batch_size: usize) -> Result<Evaluation> {
        let started = Instant::now();
        let order: Vec<usize> = (0..data.len()).collect();
        let (mut loss_sum, mut seen, mut correct, mut counted) = (0.0f64, 0usize, 0usize, 0usize);
        for idx in batches(&order, batch_size) {
            let (x, y) = data.batch(idx)?;
            let g = Graph::inference(self.backend.as_ref());
            let input = g.input(x);
            let out = self.network.forward(&g, input, Mode::Eval)?;
            let loss = self.loss.compute(&g, out, &y)?;
            loss_sum += g.value(loss).item()? as f64 * idx.len() as f64;
            seen += idx.len();
            if let Some((c, n)) = count_correct(&g.value(out), &y, None)? {
                correct += c;
                counted += n;
            }
        }
        if seen == 0 {
            return Err(LayerError::Data(
                "cannot evaluate on an empty dataset".to_string(),
            ));
        }
        Ok(Evaluation {
            loss: (loss_sum / seen as f64) as f32,
            accuracy: (counted > 0).then(|| correct as f32 / counted as f32),
            samples: seen,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The network's predictions (probabilities after an `Output::Softmax` layer) for `inputs`.
    pub fn predict(&mut self, inputs: &Tensor, batch_size: usize) -> Result<Tensor> {
        let n = *inputs
            .shape()
            .first()
            .ok_or_else(|| LayerError::Data("predict needs a batch dimension".to_string()))?;
        let inputs = inputs.contiguous()?;
        let mut outputs = Vec::new();
        let order: Vec<usize> = (0..n).collect();
        for idx in batches(&order, batch_size) {
            let x = crate::dataset::gather_rows(&inputs, idx)?;
            let g = Graph::inference(self.backend.as_ref());
            let input = g.input(x);
            let out = self.network.forward(&g, input, Mode::Predict)?;
            outputs.push(g.value(out));
        }
        let refs: Vec<&Tensor> = outputs.iter().collect();
        Ok(self.backend.concat(&refs, 0)?)
    }

    pub fn save_weights(&self, path: &Path) -> Result<()> {
        weights::save_weights(&self.network, path)
    }

    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        weights::load_weights(&mut self.network, path)
    }
}
