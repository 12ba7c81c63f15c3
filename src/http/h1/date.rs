//! The `Date` header value, formatted once per second per thread.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Calls `f` with the current IMF-fixdate (`Thu, 03 Dec 2026 10:00:00 GMT`).
pub fn with<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                c.1.copy_from_slice(text.as_bytes());
                c.0 = secs;
            }
        }
        f(&c.1)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn imf_fixdate() {
        let d = super::with(|d| String::from_utf8(d.to_vec()).unwrap());
        assert!(d.ends_with(" GMT") && d.len() == 29, "{d}");
        assert!(httpdate::parse_http_date(&d).is_ok());
    }
}
