//! Access logs: `envoy.access_loggers.file`, `.stdout` and `.stderr` with Envoy's
//! substitution formats, written when a stream (HTTP request or TCP connection) ends.

pub mod format;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::access_loggers::{file::v3 as file, stream::v3 as stream};
use envoy_types::pb::google::protobuf;
use prost::Message;

use crate::bootstrap::descriptors::type_name;
use crate::config::error::{ConfigError, index, join};
pub use format::{Format, RequestInfo, StreamInfo};

/// One configured access log.
#[derive(Debug)]
pub struct AccessLogger {
    format: Format,
    sink: Arc<Sink>,
}

/// Where log lines go. Files are opened on first write (validate mode opens nothing) and
/// shared by every logger with the same path.
#[derive(Debug)]
pub struct Sink {
    path: String,
    writer: Mutex<Option<std::io::BufWriter<std::fs::File>>>,
}

static SINKS: OnceLock<Mutex<HashMap<String, Weak<Sink>>>> = OnceLock::new();

fn sink(path: &str) -> Arc<Sink> {
    let mut all = SINKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(s) = all.get(path).and_then(Weak::upgrade) {
        return s;
    }
    let s = Arc::new(Sink {
        path: path.to_string(),
        writer: Mutex::new(None),
    });
    all.insert(path.to_string(), Arc::downgrade(&s));
    s
}

/// Flushes every open log file (called every `--file-flush-interval-msec`).
pub fn flush_all() {
    let Some(all) = SINKS.get() else { return };
    let sinks: Vec<Arc<Sink>> = all
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    for s in sinks {
        if let Ok(mut w) = s.writer.lock()
            && let Some(w) = w.as_mut()
        {
            let _ = w.flush();
        }
    }
}

impl AccessLogger {
    /// Writes one line for a finished stream.
    pub fn log(&self, info: &StreamInfo) {
        let line = self.format.render(info);
        let mut w = self.sink.writer.lock().unwrap_or_else(|e| e.into_inner());
        if w.is_none() {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.sink.path)
            {
                Ok(f) => *w = Some(std::io::BufWriter::with_capacity(64 * 1024, f)),
                Err(e) => {
                    tracing::warn!("access log {}: {e}", self.sink.path);
                    return;
                }
            }
        }
        if let Some(w) = w.as_mut() {
            let _ = w.write_all(line.as_bytes());
        }
    }
}

const FILE: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// Converts an `access_log` list; `path` points at it.
pub fn from_protos(
    logs: &[accesslog::AccessLog],
    path: &str,
    field: &str,
) -> Result<Vec<Arc<AccessLogger>>, ConfigError> {
    let mut out = Vec::new();
    for (i, l) in logs.iter().enumerate() {
        let p = index(path, field, i);
        if l.filter.is_some() {
            return Err(ConfigError::unsupported(join(&p, "filter")));
        }
        let Some(accesslog::access_log::ConfigType::TypedConfig(any)) = &l.config_type else {
            return Err(ConfigError::new(join(&p, "typed_config"), "is required"));
        };
        let tp = join(&p, "typed_config");
        let bad = |e: prost::DecodeError| ConfigError::new(&tp, format!("cannot decode: {e}"));
        let (path_out, format) = match type_name(&any.type_url) {
            FILE => {
                let f = file::FileAccessLog::decode(any.value.as_slice()).map_err(bad)?;
                if f.path.is_empty() {
                    return Err(ConfigError::new(join(&tp, "path"), "must not be empty"));
                }
                use file::file_access_log::AccessLogFormat as F;
                let format = match &f.access_log_format {
                    None => Format::text(format::DEFAULT_FORMAT),
                    Some(F::Format(s)) if s.is_empty() => Format::text(format::DEFAULT_FORMAT),
                    Some(F::Format(s)) => Format::text(s),
                    Some(F::JsonFormat(st)) => json_format(st, false, &join(&tp, "json_format"))?,
                    Some(F::TypedJsonFormat(st)) => {
                        json_format(st, false, &join(&tp, "typed_json_format"))?
                    }
                    Some(F::LogFormat(sfs)) => substitution(sfs, &join(&tp, "log_format"))?,
                }
                .map_err(|e| ConfigError::new(&tp, e))?;
                (f.path, format)
            }
            t @ (STDOUT | STDERR) => {
                // The two messages have the same shape: an optional log_format.
                let sfs = stream::StdoutAccessLog::decode(any.value.as_slice())
                    .map_err(bad)?
                    .access_log_format
                    .map(|f| match f {
                        stream::stdout_access_log::AccessLogFormat::LogFormat(s) => s,
                    });
                let format = match &sfs {
                    Some(s) => substitution(s, &join(&tp, "log_format"))?,
                    None => Format::text(format::DEFAULT_FORMAT),
                }
                .map_err(|e| ConfigError::new(&tp, e))?;
                (
                    if t == STDOUT {
                        "/dev/stdout"
                    } else {
                        "/dev/stderr"
                    }
                    .to_string(),
                    format,
                )
            }
            other => {
                return Err(ConfigError::new(
                    &tp,
                    format!("access logger {other:?} is not implemented"),
                ));
            }
        };
        out.push(Arc::new(AccessLogger {
            format,
            sink: sink(&path_out),
        }));
    }
    Ok(out)
}

type Parsed = Result<Format, String>;

fn substitution(s: &core::SubstitutionFormatString, path: &str) -> Result<Parsed, ConfigError> {
    if !s.formatters.is_empty() {
        return Err(ConfigError::unsupported(join(path, "formatters")));
    }
    if s.json_format_options.is_some() {
        return Err(ConfigError::unsupported(join(path, "json_format_options")));
    }
    use core::substitution_format_string::Format as F;
    Ok(match &s.format {
        None => Format::text(format::DEFAULT_FORMAT),
        Some(F::TextFormat(t)) => Format::text(t),
        Some(F::TextFormatSource(ds)) => {
            let b = crate::config::route::data_source(ds, &join(path, "text_format_source"))?;
            Format::text(&String::from_utf8_lossy(&b))
        }
        Some(F::JsonFormat(st)) => {
            return json_format(st, s.omit_empty_values, &join(path, "json_format"));
        }
    })
}

fn json_format(st: &protobuf::Struct, omit_empty: bool, path: &str) -> Result<Parsed, ConfigError> {
    let mut fields = Vec::new();
    for (k, v) in &st.fields {
        match &v.kind {
            Some(protobuf::value::Kind::StringValue(s)) => fields.push((k.clone(), s.clone())),
            _ => {
                return Err(ConfigError::new(
                    format!("{path}.{k}"),
                    "only string values (format strings) are supported",
                ));
            }
        }
    }
    Ok(Format::json(fields, omit_empty))
}
