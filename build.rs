//! Copies the descriptor set that the `envoy-types` crate ships beside its generated code into
//! OUT_DIR, so the bootstrap loader can read YAML/JSON through the proto3 JSON mapping.
//!
//! The crate's source is found in cargo's registry at the version Cargo.lock pins. It also
//! compiles the project's own protos in proto/.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto");
    compile_own_protos();
    println!("cargo:rerun-if-changed=Cargo.lock");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let version = locked_version(&manifest.join("Cargo.lock"), "envoy-types");
    let bin =
        find_registry_source(&format!("envoy-types-{version}")).join("src/generated/types.bin");
    let bytes = std::fs::read(&bin).unwrap_or_else(|e| panic!("read {}: {e}", bin.display()));
    std::fs::write(out.join("envoy_types.bin"), strip_source_info(&bytes))
        .expect("write descriptor set");
}

/// Compiles the project's own protos (proto/) with protox and generates tonic code.
fn compile_own_protos() {
    let fds = protox::compile(["pilotfish/test/v1/echo.proto"], ["proto"])
        .unwrap_or_else(|e| panic!("proto/ does not compile: {e}"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("tonic code generation");
}

/// The proto files (by path prefix) whose types config may name, with everything they import:
/// the bootstrap, and every extension the registry in src/config/filters.rs knows or a
/// converter reads. A type outside this set is an unknown type URL.
const DESCRIPTOR_ROOTS: &[&str] = &[
    "envoy/config/bootstrap/v3/",
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/admin/v3/config_dump",
    "envoy/config/trace/v3/",
    "envoy/config/metrics/v3/",
    "envoy/extensions/filters/network/http_connection_manager/v3/",
    "envoy/extensions/filters/network/tcp_proxy/v3/",
    "envoy/extensions/filters/network/rbac/v3/",
    "envoy/extensions/filters/http/router/v3/",
    "envoy/extensions/filters/http/compressor/v3/",
    "envoy/extensions/filters/http/rbac/v3/",
    "envoy/extensions/filters/http/fault/v3/",
    "envoy/extensions/filters/http/cors/v3/",
    "envoy/extensions/filters/http/grpc_stats/v3/",
    "envoy/extensions/filters/listener/",
    "envoy/extensions/compression/",
    "envoy/extensions/upstreams/http/v3/",
    "envoy/extensions/resource_monitors/downstream_connections/v3/",
    "envoy/extensions/bootstrap/internal_listener/v3/",
    "envoy/extensions/access_loggers/file/v3/",
    "envoy/extensions/transport_sockets/tls/v3/",
    "envoy/extensions/network/dns_resolver/cares/v3/",
    "udpa/type/v1/",
    "xds/type/v3/",
];

/// Drops the options the JSON mapping never reads (Envoy's validation rules, versioning and
/// deprecation annotations, language options): only `map_entry` (maps) and `allow_alias`
/// (enums) change how messages read, and they are kept.
fn strip_options(f: &mut prost_types::FileDescriptorProto) {
    fn message(m: &mut prost_types::DescriptorProto) {
        let map_entry = m.options.as_ref().and_then(|o| o.map_entry);
        m.options = map_entry.map(|v| prost_types::MessageOptions {
            map_entry: Some(v),
            ..Default::default()
        });
        for field in &mut m.field {
            field.options = None;
        }
        for o in &mut m.oneof_decl {
            o.options = None;
        }
        m.enum_type.iter_mut().for_each(enumeration);
        m.nested_type.iter_mut().for_each(message);
    }
    fn enumeration(e: &mut prost_types::EnumDescriptorProto) {
        let alias = e.options.as_ref().and_then(|o| o.allow_alias);
        e.options = alias.map(|v| prost_types::EnumOptions {
            allow_alias: Some(v),
            ..Default::default()
        });
        for v in &mut e.value {
            v.options = None;
        }
    }
    f.options = None;
    f.message_type.iter_mut().for_each(message);
    f.enum_type.iter_mut().for_each(enumeration);
    for s in &mut f.service {
        s.options = None;
        for m in &mut s.method {
            m.options = None;
        }
    }
}

/// Keeps the files under DESCRIPTOR_ROOTS (and their imports) and drops comments and source
/// locations: the JSON mapping needs neither, and they are most of the decoded pool's size.
fn strip_source_info(bytes: &[u8]) -> Vec<u8> {
    use prost::Message;
    let mut fds = prost_types::FileDescriptorSet::decode(bytes).expect("descriptor set decodes");
    for f in &mut fds.file {
        f.source_code_info = None;
        strip_options(f);
    }
    {
        let roots = DESCRIPTOR_ROOTS;
        let mut keep = std::collections::HashSet::new();
        let mut stack: Vec<String> = fds
            .file
            .iter()
            .filter(|f| roots.iter().any(|r| f.name().starts_with(r)))
            .map(|f| f.name().to_string())
            .collect();
        while let Some(n) = stack.pop() {
            if keep.insert(n.clone())
                && let Some(f) = fds.file.iter().find(|f| f.name() == n)
            {
                stack.extend(f.dependency.iter().cloned());
            }
        }
        fds.file.retain(|f| keep.contains(f.name()));
    }
    fds.encode_to_vec()
}

fn locked_version(lock: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(lock).expect("Cargo.lock is committed");
    let needle = format!("name = \"{name}\"\nversion = \"");
    let start = text.find(&needle).expect("envoy-types is in Cargo.lock") + needle.len();
    let end = text[start..].find('"').expect("version is quoted");
    text[start..start + end].to_string()
}

fn find_registry_source(dir_name: &str) -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    let src = cargo_home.join("registry/src");
    let entries = std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    for index in entries.flatten() {
        let candidate = index.path().join(dir_name);
        if candidate.join("Cargo.toml").exists() {
            return candidate;
        }
    }
    panic!("{dir_name} not found under {}", src.display());
}
