//! Taking a `std` lock whether or not a panic poisoned it.
//!
//! A lock is poisoned when a thread panicked while holding it. The locks in
//! jobsmith guard maps, lists and counters that each critical section leaves
//! whole (none is left half-updated by a panic that matters), and one
//! panicking job or task must not make every later caller panic as well; so
//! they are taken as if never poisoned. Public for the backend crates,
//! hidden: not an API for applications.
//!
//! ```
//! use jobsmith_core::lock::LockExt;
//! let m = std::sync::Mutex::new(1);
//! *m.lock_unpoisoned() += 1;
//! assert_eq!(*m.lock_unpoisoned(), 2);
//! ```

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`] that recovers from poisoning.
pub trait LockExt<T: ?Sized> {
    /// Blocks until the lock is held, poisoned or not.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`] that recover from poisoning.
pub trait RwLockExt<T: ?Sized> {
    /// Blocks until the lock is held for reading, poisoned or not.
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    /// Blocks until the lock is held for writing, poisoned or not.
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let m = Mutex::new(1);
        let rw = RwLock::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _m = m.lock().unwrap();
            let _rw = rw.write().unwrap();
            panic!("poison both");
        });
        assert!(m.is_poisoned() && rw.is_poisoned());
        *m.lock_unpoisoned() += 1;
        *rw.write_unpoisoned() += 1;
        assert_eq!((*m.lock_unpoisoned(), *rw.read_unpoisoned()), (2, 2));
    }
}
