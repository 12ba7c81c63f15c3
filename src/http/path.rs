//! Path normalization as the HCM's `normalize_path` and `merge_slashes` do it: RFC 3986
//! dot-segment removal, percent-decoding of unreserved characters, upper-case hex in the
//! remaining escapes, backslashes as slashes, and optionally merged slashes. The query is kept.

/// Returns the normalized path-and-query, or None when the path cannot be normalized (it
/// climbs above the root, or is not absolute): Envoy answers such requests with 400.
pub fn normalize(path_and_query: &str, normalize: bool, merge_slashes: bool) -> Option<String> {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => (&path_and_query[..i], &path_and_query[i..]),
        None => (path_and_query, ""),
    };
    if !path.starts_with('/') && !path.starts_with('\\') {
        return None;
    }
    let mut p = if normalize {
        canonical(path)?
    } else {
        path.to_string()
    };
    if merge_slashes {
        let mut out = String::with_capacity(p.len());
        for c in p.chars() {
            if c == '/' && out.ends_with('/') {
                continue;
            }
            out.push(c);
        }
        p = out;
    }
    Some(format!("{p}{query}"))
}

fn canonical(path: &str) -> Option<String> {
    let hex = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    let b = path.as_bytes();
    let mut bytes = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            let v = hi << 4 | lo;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                bytes.push(v);
            } else {
                bytes.push(b'%');
                bytes.push(b[i + 1].to_ascii_uppercase());
                bytes.push(b[i + 2].to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        bytes.push(if c == b'\\' { b'/' } else { c });
        i += 1;
    }
    // Only ASCII was decoded or replaced, so the bytes are still UTF-8.
    let decoded = String::from_utf8(bytes).ok()?;
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = n == last,
            ".." => {
                out.pop()?;
                trailing_slash = n == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if trailing_slash && !result.ends_with('/') {
        result.push('/');
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_escapes() {
        assert_eq!(
            normalize("/a/./b/../c?x=/../", true, false).unwrap(),
            "/a/c?x=/../"
        );
        assert_eq!(
            normalize("/a/%7euser/%2f", true, false).unwrap(),
            "/a/~user/%2F"
        );
        assert_eq!(normalize("/a\\b", true, false).unwrap(), "/a/b");
        assert_eq!(normalize("/a/b/..", true, false).unwrap(), "/a/");
        assert!(normalize("/..", true, false).is_none());
        assert_eq!(normalize("/a//b///c", false, true).unwrap(), "/a/b/c");
        assert_eq!(normalize("/a//b", false, false).unwrap(), "/a//b");
        assert_eq!(normalize("/%é/ü%", true, false).unwrap(), "/%é/ü%");
    }
}
