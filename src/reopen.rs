//! A store's open file, let go of after a storage error and opened again on next use. redb
//! refuses every transaction on a file after a failed write ("Previous I/O error occurred. Please
//! close and re-open the database"), so without this a full disk that is freed again would need a
//! restart. The journal and the embedded identity store hold their file through one.

use std::sync::{Arc, PoisonError, RwLock};

pub struct Reopening<T> {
    /// What the log calls it, e.g. `journal /var/lib/leadgate/journal.redb`.
    what: String,
    /// `None` after a storage error, until the next use opens the file again.
    open: RwLock<Option<Arc<T>>>,
}

impl<T> Reopening<T> {
    pub fn new(what: String, opened: T) -> Self {
        Self {
            what,
            open: RwLock::new(Some(Arc::new(opened))),
        }
    }

    /// The open file, opened again with `reopen` if a storage error let go of it. Until every
    /// user of the failed handle has let go of it, the file is still locked: `reopen` fails now
    /// and succeeds a moment later.
    pub fn get<E>(&self, reopen: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
        if let Some(open) = &*self.open.read().unwrap_or_else(PoisonError::into_inner) {
            return Ok(open.clone());
        }
        let mut slot = self.open.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = &*slot {
            return Ok(open.clone());
        }
        let open = Arc::new(reopen()?);
        tracing::info!(store = %self.what, "opened again after a storage error");
        *slot = Some(open.clone());
        Ok(open)
    }

    /// Runs `f` on `open` (from [`Reopening::get`]); when it fails with an error `is_storage`
    /// recognizes, lets go of the file, so the next use opens it afresh.
    pub fn with<R, E: std::fmt::Display>(
        &self,
        open: Arc<T>,
        is_storage: impl Fn(&E) -> bool,
        f: impl FnOnce(&T) -> Result<R, E>,
    ) -> Result<R, E> {
        let result = f(&open);
        if let Err(e) = &result
            && is_storage(e)
            && self
                .open
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take_if(|current| Arc::ptr_eq(current, &open))
                .is_some()
        {
            tracing::warn!(store = %self.what, error = %e, "storage failed; the file is opened again on next use");
        }
        result
    }

    /// Puts `opened` in place of the open file (a store rewritten under a new file: an
    /// erasure). Users of the old one finish with it.
    pub fn replace(&self, opened: T) {
        *self.open.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(opened));
    }

    /// The open file, if it is open (for closing).
    pub fn current(&mut self) -> Option<&Arc<T>> {
        self.open
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::Reopening;

    #[test]
    fn a_storage_error_lets_go_and_the_next_use_opens_again() {
        let r = Reopening::new("test".into(), 1u32);
        let first = r.get(|| Ok::<_, String>(99)).unwrap();
        assert_eq!(*first, 1, "open: not opened again");
        let failed: Result<(), String> = r.with(first, |_| true, |_| Err("disk full".into()));
        assert!(failed.is_err());
        // Reopening fails (the file is still locked), then succeeds.
        assert!(r.get(|| Err::<u32, _>("locked".to_owned())).is_err());
        assert_eq!(*r.get(|| Ok::<_, String>(2)).unwrap(), 2);
        // An error that is not about storage keeps the file.
        let open = r.get(|| Ok::<_, String>(3)).unwrap();
        let _: Result<(), String> = r.with(open, |_| false, |_| Err("bad input".into()));
        assert_eq!(*r.get(|| Ok::<_, String>(4)).unwrap(), 2);
    }
}
