//! The `Date` header value, formatted once per second per thread.

use std::cell::RefCell;
use std::time::{Duration, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};

thread_local! {
    static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Writes the current IMF-fixdate (`Thu, 03 Dec 2026 10:00:00 GMT`) to `dst`.
pub fn write(dst: &mut BytesMut) {
    let secs = crate::clock::unix_secs();
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            if text.len() == 29 {
                c.1.copy_from_slice(text.as_bytes());
                c.0 = secs;
            }
        }
        dst.put_slice(&c.1);
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn imf_fixdate() {
        let mut b = bytes::BytesMut::new();
        super::write(&mut b);
        let d = String::from_utf8(b.to_vec()).unwrap();
        assert!(d.ends_with(" GMT") && d.len() == 29, "{d}");
        let parsed = httpdate::parse_http_date(&d).unwrap();
        let age = std::time::SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_default();
        assert!(age < std::time::Duration::from_secs(3), "{d}");
    }
}
