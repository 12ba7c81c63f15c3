//! An index of a serialized `FileDescriptorSet`, read straight from its wire bytes: each file's
//! imports, top-level type names and bytes. It lets the pool decode only the files (and
//! their imports) that the config at hand names, instead of all of Envoy's API.

use std::collections::HashMap;

use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint};

/// One file of the set.
#[derive(Debug)]
pub struct File {
    /// Indexes of the files it imports.
    pub deps: Vec<usize>,
    /// Its serialized `FileDescriptorProto`.
    pub bytes: &'static [u8],
}

/// The files of a descriptor set and where each top-level message or enum is defined.
#[derive(Debug, Default)]
pub struct Index {
    files: Vec<File>,
    /// `(package, top-level type name)` to the defining file.
    types: HashMap<(&'static str, &'static str), usize>,
}

/// A field of a message on the wire, as far as this index needs to read it.
enum Value {
    /// A varint or fixed-width number (skipped).
    Scalar,
    Bytes(&'static [u8]),
}

/// Reads the fields of one message, in order.
fn fields(
    mut buf: &'static [u8],
) -> impl Iterator<Item = Result<(u32, Value), prost::DecodeError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        Some(read_field(&mut buf))
    })
}

fn read_field(buf: &mut &'static [u8]) -> Result<(u32, Value), prost::DecodeError> {
    let (tag, wire) = decode_key(buf)?;
    let value = match wire {
        WireType::Varint => {
            decode_varint(buf)?;
            Value::Scalar
        }
        WireType::LengthDelimited => {
            let len = usize::try_from(decode_varint(buf)?)
                .map_err(|_| prost::DecodeError::new("length overflows usize"))?;
            if len > buf.len() {
                return Err(prost::DecodeError::new("length past the end"));
            }
            let (value, rest) = buf.split_at(len);
            *buf = rest;
            Value::Bytes(value)
        }
        WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
            let len = if wire == WireType::SixtyFourBit { 8 } else { 4 };
            if len > buf.len() {
                return Err(prost::DecodeError::new("fixed field past the end"));
            }
            buf.advance(len);
            Value::Scalar
        }
        WireType::StartGroup | WireType::EndGroup => {
            return Err(prost::DecodeError::new(
                "groups are not used by descriptors",
            ));
        }
    };
    Ok((tag, value))
}

fn text(bytes: &'static [u8]) -> Result<&'static str, prost::DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| prost::DecodeError::new("name is not UTF-8"))
}

/// `FileDescriptorSet.file`, `FileDescriptorProto.{name, package, dependency, message_type,
/// enum_type}` and `DescriptorProto.name` / `EnumDescriptorProto.name`.
const SET_FILE: u32 = 1;
const FILE_NAME: u32 = 1;
const FILE_PACKAGE: u32 = 2;
const FILE_DEPENDENCY: u32 = 3;
const FILE_MESSAGE_TYPE: u32 = 4;
const FILE_ENUM_TYPE: u32 = 5;
const TYPE_NAME: u32 = 1;

impl Index {
    /// Indexes a serialized `FileDescriptorSet`.
    pub fn parse(set: &'static [u8]) -> Result<Index, prost::DecodeError> {
        struct Raw {
            name: &'static str,
            package: &'static str,
            deps: Vec<&'static str>,
            types: Vec<&'static str>,
            bytes: &'static [u8],
        }
        let mut raws = Vec::new();
        for field in fields(set) {
            let (SET_FILE, Value::Bytes(bytes)) = field? else {
                continue;
            };
            let mut raw = Raw {
                name: "",
                package: "",
                deps: Vec::new(),
                types: Vec::new(),
                bytes,
            };
            for field in fields(bytes) {
                match field? {
                    (FILE_NAME, Value::Bytes(b)) => raw.name = text(b)?,
                    (FILE_PACKAGE, Value::Bytes(b)) => raw.package = text(b)?,
                    (FILE_DEPENDENCY, Value::Bytes(b)) => raw.deps.push(text(b)?),
                    (FILE_MESSAGE_TYPE | FILE_ENUM_TYPE, Value::Bytes(b)) => {
                        for field in fields(b) {
                            if let (TYPE_NAME, Value::Bytes(n)) = field? {
                                raw.types.push(text(n)?);
                            }
                        }
                    }
                    _ => {}
                }
            }
            raws.push(raw);
        }
        let by_name: HashMap<&str, usize> =
            raws.iter().enumerate().map(|(i, r)| (r.name, i)).collect();
        let mut index = Index::default();
        for (i, raw) in raws.into_iter().enumerate() {
            for t in raw.types {
                index.types.insert((raw.package, t), i);
            }
            let deps = raw
                .deps
                .iter()
                .map(|d| {
                    by_name.get(d).copied().ok_or_else(|| {
                        prost::DecodeError::new("a file imports one the set does not hold")
                    })
                })
                .collect::<Result<_, _>>()?;
            index.files.push(File {
                deps,
                bytes: raw.bytes,
            });
        }
        Ok(index)
    }

    /// The number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// The file at `i`.
    pub fn file(&self, i: usize) -> &File {
        &self.files[i]
    }

    /// The file defining a message or enum by its full name; a nested type
    /// (`envoy.config.cluster.v3.Cluster.EdsClusterConfig`) is found through its top-level one.
    pub fn file_of(&self, full_name: &str) -> Option<usize> {
        let full_name = full_name.strip_prefix('.').unwrap_or(full_name);
        // The package is everything before some dot; the top-level name is the segment after it.
        full_name
            .char_indices()
            .filter(|(_, c)| *c == '.')
            .find_map(|(dot, _)| {
                let package = &full_name[..dot];
                let rest = &full_name[dot + 1..];
                let top = rest.split('.').next().unwrap_or(rest);
                self.types.get(&(package, top)).copied()
            })
            .or_else(|| self.types.get(&("", full_name)).copied())
    }

    /// The files `roots` need that `loaded` does not mark, imports before the files that import
    /// them (the order a descriptor pool accepts them in).
    pub fn load_order(&self, roots: &[usize], loaded: &[bool]) -> Vec<usize> {
        let mut seen = loaded.to_vec();
        seen.resize(self.files.len(), false);
        let mut order = Vec::new();
        for &root in roots {
            self.visit(root, &mut seen, &mut order);
        }
        order
    }

    fn visit(&self, file: usize, seen: &mut [bool], order: &mut Vec<usize>) {
        // Depth-first with an explicit stack: (file, next import to look at).
        let mut stack = vec![(file, 0)];
        if seen[file] {
            return;
        }
        seen[file] = true;
        while let Some((f, next)) = stack.pop() {
            match self.files[f].deps.get(next) {
                Some(&dep) => {
                    stack.push((f, next + 1));
                    if !seen[dep] {
                        seen[dep] = true;
                        stack.push((dep, 0));
                    }
                }
                None => order.push(f),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use prost_reflect::prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};

    fn file(name: &str, package: &str, deps: &[&str], types: &[&str]) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some(package.into()),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            message_type: types
                .iter()
                .map(|t| DescriptorProto {
                    name: Some(t.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn set() -> &'static [u8] {
        let set = FileDescriptorSet {
            file: vec![
                file("base.proto", "a.v1", &[], &["Base"]),
                file("mid.proto", "a.v1", &["base.proto"], &["Mid", "Other"]),
                file("top.proto", "b.v1", &["mid.proto", "base.proto"], &["Top"]),
                file("alone.proto", "c", &[], &["Alone"]),
            ],
        };
        Vec::leak(set.encode_to_vec())
    }

    #[test]
    fn finds_the_file_of_top_level_and_nested_types() {
        let index = Index::parse(set()).unwrap();
        assert_eq!(index.len(), 4);
        assert_eq!(index.file_of("a.v1.Mid"), Some(1));
        assert_eq!(index.file_of(".b.v1.Top"), Some(2));
        assert_eq!(index.file_of("b.v1.Top.Nested.Deeper"), Some(2));
        assert_eq!(index.file_of("a.v1.Missing"), None);
        assert_eq!(index.file_of("b.v1"), None);
    }

    #[test]
    fn load_order_puts_imports_first_and_skips_loaded_files() {
        let index = Index::parse(set()).unwrap();
        assert_eq!(index.load_order(&[2], &[]), vec![0, 1, 2]);
        assert_eq!(index.load_order(&[2, 3], &[true, false]), vec![1, 2, 3]);
        assert!(
            index
                .load_order(&[1], &[true, true, false, false])
                .is_empty()
        );
    }

    #[test]
    fn each_file_bytes_decode_as_that_file() {
        let index = Index::parse(set()).unwrap();
        let f = FileDescriptorProto::decode(index.file(2).bytes).unwrap();
        assert_eq!(f.name(), "top.proto");
        assert_eq!(index.file(2).deps, vec![1, 0]);
    }

    #[test]
    fn truncated_set_is_an_error() {
        let bytes = set();
        assert!(Index::parse(&bytes[..bytes.len() - 3]).is_err());
    }
}
