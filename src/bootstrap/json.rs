//! YAML/JSON text to Envoy protos through the proto3 JSON mapping: camelCase or snake_case names,
//! `@type` Anys, `udpa.type.v1.TypedStruct` / `xds.type.v3.TypedStruct` wrappers, durations,
//! wrappers and enums by name. Errors name the field path.

use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, ReflectMessage};
use serde_json::Value;

use super::descriptors;
use crate::config::ConfigError;

const TYPED_STRUCT_URLS: [&str; 2] = [
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// Parses YAML (JSON is YAML) into a JSON value.
pub fn parse_yaml(text: &str, what: &str) -> Result<Value, ConfigError> {
    let v: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigError::new(what, format!("malformed YAML/JSON: {e}")))?;
    Ok(if v.is_null() {
        Value::Object(Default::default())
    } else {
        v
    })
}

/// Decodes a JSON value as message `M`. With `allow_unknown`, unknown fields are skipped
/// (Envoy's `--allow-unknown-static-fields`) and reported in the returned list.
pub fn decode<M>(
    mut value: Value,
    root: &str,
    allow_unknown: bool,
) -> Result<(M, DynamicMessage, Vec<String>), ConfigError>
where
    M: prost::Message + prost::Name + Default,
{
    unwrap_typed_structs(&mut value, root)?;
    let mut any_types = Vec::new();
    collect_any_types(&value, &mut any_types);
    descriptors::prepare(any_types.iter().map(|t| descriptors::type_name(t)));
    let desc = descriptors::message(&M::full_name())
        .ok_or_else(|| ConfigError::new(root, format!("no descriptor for {}", M::full_name())))?;
    let strict = deserialize(&desc, &value, true);
    let (dynamic, unknown) = match strict {
        Ok(m) => (m, Vec::new()),
        Err(e) if allow_unknown && is_unknown_field(&e.msg) => {
            let m = deserialize(&desc, &value, false).map_err(|e| e.under(root))?;
            (m, vec![e.under(root).to_string()])
        }
        Err(e) => return Err(e.under(root)),
    };
    let msg = M::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|e| ConfigError::new(root, format!("re-decoding failed: {e}")))?;
    Ok((msg, dynamic, unknown))
}

fn is_unknown_field(msg: &str) -> bool {
    msg.contains("unrecognized field") || msg.starts_with("unknown field")
}

/// Renders a message as JSON with proto field names, skipping defaults (the shape of Envoy's
/// `/config_dump`). Anys of known types are expanded with `@type`.
pub fn to_json<M: prost::Message + prost::Name>(msg: &M) -> Value {
    descriptors::load_all();
    let Some(desc) = descriptors::message(&M::full_name()) else {
        return Value::Null;
    };
    match DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()) {
        Ok(d) => dynamic_to_json(&d),
        Err(_) => Value::Null,
    }
}

/// Renders a dynamic message as JSON with proto field names.
pub fn dynamic_to_json(d: &DynamicMessage) -> Value {
    let opts = prost_reflect::SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    let _ = d.descriptor();
    d.serialize_with_options(serde_json::value::Serializer, &opts)
        .unwrap_or(Value::Null)
}

fn deserialize(
    desc: &prost_reflect::MessageDescriptor,
    value: &Value,
    deny_unknown: bool,
) -> Result<DynamicMessage, ConfigError> {
    let opts = DeserializeOptions::new().deny_unknown_fields(deny_unknown);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    DynamicMessage::deserialize_with_options(desc.clone(), de, &opts).map_err(|e| {
        let path = track.path().to_string();
        let path = if path == "?" || path == "." {
            String::new()
        } else {
            path
        };
        ConfigError::new(path, e.to_string())
    })
}

/// Rewrites every TypedStruct wrapper `{"@type": TypedStruct, type_url, value}` in place into the
/// Any form `{"@type": type_url, ...value}` so the JSON mapping decodes the inner message.
pub fn unwrap_typed_structs(value: &mut Value, path: &str) -> Result<(), ConfigError> {
    match value {
        Value::Object(map) => {
            let is_typed_struct = map
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| TYPED_STRUCT_URLS.contains(&t));
            if is_typed_struct {
                let type_url = map
                    .get("type_url")
                    .or_else(|| map.get("typeUrl"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| ConfigError::new(path, "TypedStruct without type_url"))?
                    .to_string();
                if descriptors::message(descriptors::type_name(&type_url)).is_none() {
                    return Err(ConfigError::new(
                        format!("{path}.type_url"),
                        format!("unknown type URL {type_url}"),
                    ));
                }
                let mut inner = match map.remove("value") {
                    Some(Value::Object(o)) => o,
                    None | Some(Value::Null) => Default::default(),
                    Some(_) => {
                        return Err(ConfigError::new(
                            format!("{path}.value"),
                            "TypedStruct value must be an object",
                        ));
                    }
                };
                inner.insert("@type".into(), Value::String(type_url));
                *map = inner;
            }
            for (k, v) in map.iter_mut() {
                unwrap_typed_structs(v, &join(path, k))?;
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                unwrap_typed_structs(v, &format!("{path}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The `@type` of every Any in a JSON value (after TypedStruct unwrapping).
fn collect_any_types<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(t) = map.get("@type").and_then(Value::as_str) {
                out.push(t);
            }
            map.values().for_each(|v| collect_any_types(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_any_types(v, out)),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

    #[test]
    fn camel_and_snake_case_and_durations() {
        let v = parse_yaml(
            "staticResources:\n  clusters:\n  - name: a\n    connect_timeout: 0.25s\n",
            "-",
        )
        .unwrap();
        let (b, _, _) = decode::<Bootstrap>(v, "", false).unwrap();
        let c = &b.static_resources.unwrap().clusters[0];
        assert_eq!(c.name, "a");
        assert_eq!(c.connect_timeout.as_ref().unwrap().nanos, 250_000_000);
    }

    #[test]
    fn unknown_field_names_path() {
        let v = parse_yaml(
            "static_resources:\n  clusters:\n  - name: a\n    bogus: 1\n",
            "-",
        )
        .unwrap();
        let e = decode::<Bootstrap>(v, "", false).unwrap_err();
        assert!(e.path.contains("clusters[0]"), "{e}");
        assert!(e.msg.contains("bogus"), "{e}");
    }

    #[test]
    fn typed_struct_is_unwrapped() {
        let mut v = serde_json::json!({"typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "value": {"suppress_envoy_headers": true}}});
        unwrap_typed_structs(&mut v, "").unwrap();
        assert_eq!(
            v["typed_config"]["@type"],
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        );
        assert_eq!(v["typed_config"]["suppress_envoy_headers"], true);
    }
}
