//! What the tls_inspector listener filter reads from the first bytes of a connection: whether
//! they start a TLS handshake, and the ClientHello's SNI and ALPN list. Pure: bytes in, a
//! verdict out; the caller peeks more bytes while the verdict is `NeedMore`.

/// The verdict on the bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// Not a TLS handshake (`raw_buffer`).
    NotTls,
    /// A TLS ClientHello.
    Tls(ClientHello),
}

/// The fields of a ClientHello that filter-chain matching uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// server_name, lowercased.
    pub sni: Option<String>,
    /// The ALPN protocols offered, in order.
    pub alpn: Vec<String>,
}

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// Inspects the first bytes of a connection. A ClientHello split over several TLS records
/// is reassembled.
pub fn inspect(bytes: &[u8]) -> Inspection {
    // Reassemble the handshake message from the records seen so far.
    let mut message = Vec::new();
    let mut rest = bytes;
    loop {
        if rest.len() < 5 {
            return verdict_on_prefix(bytes, rest);
        }
        if rest[0] != HANDSHAKE || rest[1] != 3 || rest[2] > 4 {
            return Inspection::NotTls;
        }
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        if len == 0 || len > 16384 + 2048 {
            return Inspection::NotTls;
        }
        if rest.len() < 5 + len {
            return Inspection::NeedMore;
        }
        message.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if message.len() >= 4 {
            if message[0] != CLIENT_HELLO {
                return Inspection::NotTls;
            }
            let body_len = u32::from_be_bytes([0, message[1], message[2], message[3]]) as usize;
            if message.len() >= 4 + body_len {
                return match parse_client_hello(&message[4..4 + body_len]) {
                    Some(hello) => Inspection::Tls(hello),
                    None => Inspection::NotTls,
                };
            }
        }
    }
}

/// With fewer than 5 bytes of the next record: a first record that cannot be TLS is
/// `NotTls` at once (plaintext protocols are told apart by their first byte).
fn verdict_on_prefix(all: &[u8], rest: &[u8]) -> Inspection {
    if all.len() == rest.len() {
        let plausible = match rest {
            [] => true,
            [t] => *t == HANDSHAKE,
            [t, major, ..] => *t == HANDSHAKE && *major == 3,
        };
        if !plausible {
            return Inspection::NotTls;
        }
    }
    Inspection::NeedMore
}

/// A byte reader that fails softly on short input.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

fn parse_client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut hello = ClientHello::default();
    if r.0.is_empty() {
        return Some(hello);
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let mut data = Reader(exts.vec16()?);
        match kind {
            EXT_SERVER_NAME => {
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 && hello.sni.is_none() {
                        hello.sni = Some(String::from_utf8_lossy(name).to_ascii_lowercase());
                    }
                }
            }
            EXT_ALPN => {
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    hello
                        .alpn
                        .push(String::from_utf8_lossy(list.vec8()?).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello with `sni` and `alpn`, in one record or split into records of `split`
    /// bytes.
    fn hello(sni: Option<&str>, alpn: &[&str], split: usize) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(s) = sni {
            let mut list = vec![0u8];
            list.extend_from_slice(&(s.len() as u16).to_be_bytes());
            list.extend_from_slice(s.as_bytes());
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&list);
            exts.extend_from_slice(&0u16.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(&data);
        }
        if !alpn.is_empty() {
            let mut list = Vec::new();
            for p in alpn {
                list.push(p.len() as u8);
                list.extend_from_slice(p.as_bytes());
            }
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&list);
            exts.extend_from_slice(&16u16.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(&data);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![CLIENT_HELLO, 0];
        msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
        msg.extend_from_slice(&body);
        let mut out = Vec::new();
        for chunk in msg.chunks(split) {
            out.extend_from_slice(&[HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn sni_and_alpn_are_read() {
        let b = hello(
            Some("Reviews.Default.svc"),
            &["istio-http/1.1", "h2"],
            16384,
        );
        assert_eq!(
            inspect(&b),
            Inspection::Tls(ClientHello {
                sni: Some("reviews.default.svc".into()),
                alpn: vec!["istio-http/1.1".into(), "h2".into()],
            })
        );
    }

    #[test]
    fn every_prefix_needs_more_and_split_records_reassemble() {
        let b = hello(Some("a.test"), &["h2"], 20);
        for n in 0..b.len() {
            assert_eq!(inspect(&b[..n]), Inspection::NeedMore, "prefix {n}");
        }
        assert!(matches!(inspect(&b), Inspection::Tls(h) if h.sni.as_deref() == Some("a.test")));
    }

    #[test]
    fn plaintext_is_told_at_once() {
        assert_eq!(inspect(b"G"), Inspection::NotTls);
        assert_eq!(inspect(b"GET / HTTP/1.1\r\n"), Inspection::NotTls);
        assert_eq!(inspect(b"PRI * HTTP/2.0"), Inspection::NotTls);
        assert_eq!(inspect(&[22, 9]), Inspection::NotTls);
        assert_eq!(
            inspect(&[22, 3, 1, 0, 5, 2, 0, 0, 1, 0]),
            Inspection::NotTls,
            "not a ClientHello"
        );
    }

    #[test]
    fn hello_without_extensions() {
        let b = hello(None, &[], 16384);
        assert_eq!(inspect(&b), Inspection::Tls(ClientHello::default()));
    }
}
