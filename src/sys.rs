//! Process facts and the few calls into libc the proxy needs. The only module allowed
//! `unsafe` code.

#![allow(unsafe_code)]

/// Resident set size of this process in bytes, from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Returns freed heap memory to the kernel (after large config-time structures are dropped).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers
    // and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The destination a connection had before iptables redirected it (`SO_ORIGINAL_DST`, or
/// `IP6T_SO_ORIGINAL_DST` on IPv6). None when it was not redirected.
pub fn original_dst(stream: &tokio::net::TcpStream) -> Option<std::net::SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    let v4 = match stream.local_addr().ok()? {
        std::net::SocketAddr::V4(_) => true,
        // An IPv4 connection on a dual-stack socket is tracked as IPv4.
        std::net::SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    };
    if v4 {
        let a = getsockopt(stream, sockopt::OriginalDst).ok()?;
        let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
        Some(std::net::SocketAddr::from((ip, u16::from_be(a.sin_port))))
    } else {
        let a = getsockopt(stream, sockopt::Ip6tOriginalDst).ok()?;
        let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
        Some(std::net::SocketAddr::from((ip, u16::from_be(a.sin6_port))))
    }
}
