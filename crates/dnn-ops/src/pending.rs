//! Values being read back from a backend ([`Backend::read_later`](crate::Backend::read_later)):
//! ready at once on the CPU, a queued device→host copy on a GPU, so that a training loop can
//! queue its next step before it looks at the loss of this one.

use crate::error::Result;

/// A few values on their way to the host; [`Self::wait`] gives them.
#[derive(Debug)]
pub struct PendingValues {
    state: State,
}

#[derive(Debug)]
enum State {
    Ready(Vec<f32>),
    #[cfg(feature = "cuda")]
    Queued(magma_tensor::cuda::QueuedRead),
}

impl PendingValues {
    /// Values already on the host.
    pub fn ready(values: Vec<f32>) -> Self {
        Self {
            state: State::Ready(values),
        }
    }

    /// A device→host copy queued on a CUDA device.
    #[cfg(feature = "cuda")]
    pub fn queued(read: magma_tensor::cuda::QueuedRead) -> Self {
        Self {
            state: State::Queued(read),
        }
    }

    /// The values, waiting for the work queued before the read (not after it).
    pub fn wait(self) -> Result<Vec<f32>> {
        match self.state {
            State::Ready(values) => Ok(values),
            #[cfg(feature = "cuda")]
            State::Queued(read) => Ok(read.wait()?),
        }
    }
}
