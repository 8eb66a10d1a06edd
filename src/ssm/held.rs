//! Bytes of output held for a consumer that has not taken them yet, as one cheap shared
//! total: each holder (a channel's receive window, a chunk queued for the consumer, the
//! consumer's own buffers) owns a [`HeldShare`] it sets, and dropping the share removes
//! its part, so the total stays right however a holder ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A shared total of held bytes. Cheap to clone (the clones add to the same total).
#[derive(Clone, Debug, Default)]
pub struct HeldBytes(Arc<AtomicUsize>);

impl HeldBytes {
    /// A fresh total of zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes held by every share right now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// A new share of this total, holding nothing yet.
    pub fn share(&self) -> HeldShare {
        HeldShare {
            total: self.clone(),
            mine: 0,
        }
    }
}

/// One holder's part of a [`HeldBytes`] total; dropping it takes that part out again.
#[derive(Debug)]
pub struct HeldShare {
    total: HeldBytes,
    mine: usize,
}

impl HeldShare {
    /// Says that this holder now holds `bytes`.
    pub fn set(&mut self, bytes: usize) {
        if bytes > self.mine {
            self.total.0.fetch_add(bytes - self.mine, Ordering::Relaxed);
        } else if bytes < self.mine {
            self.total.0.fetch_sub(self.mine - bytes, Ordering::Relaxed);
        }
        self.mine = bytes;
    }

    /// What this holder holds.
    pub fn get(&self) -> usize {
        self.mine
    }
}

impl Drop for HeldShare {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_leave_the_total_when_dropped() {
        let total = HeldBytes::new();
        let mut a = total.share();
        let mut b = total.clone().share();
        a.set(100);
        b.set(50);
        assert_eq!(total.get(), 150);
        a.set(30);
        assert_eq!((a.get(), total.get()), (30, 80));
        drop(b);
        assert_eq!(total.get(), 30);
        drop(a);
        assert_eq!(total.get(), 0);
    }
}
