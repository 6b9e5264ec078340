//! Learning-rate schedules, applied at the end of each epoch.

/// Decides the learning rate of the next epoch.
pub trait LrSchedule: Send {
    /// The learning rate after `completed_epochs` epochs (1-based count of finished epochs),
    /// given the initial rate, the current one and an optional monitored metric (lower is better).
    fn next_lr(
        &mut self,
        completed_epochs: usize,
        initial_lr: f32,
        current_lr: f32,
        metric: Option<f32>,
    ) -> f32;
    fn describe(&self) -> String;
}

/// Multiplies the rate by `gamma` every `step_size` epochs.
#[derive(Debug, Clone)]
pub struct StepLr {
    pub step_size: usize,
    pub gamma: f32,
}

impl LrSchedule for StepLr {
    fn next_lr(
        &mut self,
        completed: usize,
        initial: f32,
        _current: f32,
        _metric: Option<f32>,
    ) -> f32 {
        initial * self.gamma.powi((completed / self.step_size.max(1)) as i32)
    }
    fn describe(&self) -> String {
        format!("step(every {} epochs × {})", self.step_size, self.gamma)
    }
}

/// Cosine annealing from the initial rate to `min_lr` over `total_epochs`.
#[derive(Debug, Clone)]
pub struct CosineLr {
    pub total_epochs: usize,
    pub min_lr: f32,
}

impl LrSchedule for CosineLr {
    fn next_lr(
        &mut self,
        completed: usize,
        initial: f32,
        _current: f32,
        _metric: Option<f32>,
    ) -> f32 {
        let t = (completed.min(self.total_epochs) as f32) / self.total_epochs.max(1) as f32;
        self.min_lr + 0.5 * (initial - self.min_lr) * (1.0 + (std::f32::consts::PI * t).cos())
    }
    fn describe(&self) -> String {
        format!(
            "cosine(over {} epochs to {:e})",
            self.total_epochs, self.min_lr
        )
    }
}

/// Multiplies the rate by `factor` when the metric has not improved for `patience` epochs.
#[derive(Debug, Clone)]
pub struct ReduceOnPlateau {
    pub factor: f32,
    pub patience: usize,
    pub min_lr: f32,
    /// Relative improvement that counts as better.
    pub threshold: f32,
    best: Option<f32>,
    bad_epochs: usize,
}

impl ReduceOnPlateau {
    pub fn new(factor: f32, patience: usize) -> Self {
        Self {
            factor,
            patience,
            min_lr: 0.0,
            threshold: 1e-4,
            best: None,
            bad_epochs: 0,
        }
    }
}

impl LrSchedule for ReduceOnPlateau {
    fn next_lr(
        &mut self,
        _completed: usize,
        _initial: f32,
        current: f32,
        metric: Option<f32>,
    ) -> f32 {
        let Some(m) = metric else { return current };
        match self.best {
            Some(b) if m >= b * (1.0 - self.threshold) => self.bad_epochs += 1,
            _ => {
                self.best = Some(m);
                self.bad_epochs = 0;
            }
        }
        if self.bad_epochs > self.patience {
            self.bad_epochs = 0;
            return (current * self.factor).max(self.min_lr);
        }
        current
    }
    fn describe(&self) -> String {
        format!(
            "reduce-on-plateau(× {} after {} epochs)",
            self.factor, self.patience
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_their_formulas() {
        let mut s = StepLr {
            step_size: 2,
            gamma: 0.5,
        };
        assert_eq!(s.next_lr(1, 1.0, 1.0, None), 1.0);
        assert_eq!(s.next_lr(2, 1.0, 1.0, None), 0.5);
        assert_eq!(s.next_lr(5, 1.0, 0.5, None), 0.25);
        let mut c = CosineLr {
            total_epochs: 10,
            min_lr: 0.0,
        };
        assert!((c.next_lr(5, 1.0, 1.0, None) - 0.5).abs() < 1e-6);
        assert!(c.next_lr(10, 1.0, 1.0, None).abs() < 1e-6);
        let mut r = ReduceOnPlateau::new(0.1, 1);
        assert_eq!(r.next_lr(1, 1.0, 1.0, Some(1.0)), 1.0);
        assert_eq!(r.next_lr(2, 1.0, 1.0, Some(1.0)), 1.0);
        assert!((r.next_lr(3, 1.0, 1.0, Some(1.0)) - 0.1).abs() < 1e-7);
        assert!(
            (r.next_lr(4, 1.0, 0.1, Some(0.5)) - 0.1).abs() < 1e-7,
            "improvement resets patience"
        );
    }
}
