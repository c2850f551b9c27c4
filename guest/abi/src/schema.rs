//! A JSON Schema (draft 2020-12) of the ABI's JSON bodies, generated from
//! the wire types themselves, for authors who write a plugin in another
//! language. It is checked in as `guest/abi/schema.json`; a test keeps that
//! file current and checks that `guest/ABI.md` names every type and field.
//!
//! The schema describes what a reader of this minor accepts: fields it does
//! not list are ignored, not refused (see [`ABI_MINOR`](crate::ABI_MINOR)).

use crate::{Answer, Beyond, GuestError, LoadRequest, Loaded, Prompt, Tensor};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use std::borrow::Cow;

/// The schema document: every body of a result frame and the load header, under `$defs`.
pub fn document() -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let bodies = [
        ("Answer", generator.subschema_for::<Answer>()),
        ("Prompt", generator.subschema_for::<Prompt>()),
        ("Beyond", generator.subschema_for::<Beyond>()),
        ("GuestError", generator.subschema_for::<GuestError>()),
        ("Loaded", generator.subschema_for::<Loaded>()),
        ("LoadRequest", generator.subschema_for::<LoadRequest>()),
    ];
    let defs = generator.take_definitions(true);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("edgecascade guest ABI {}.{}", crate::ABI_VERSION, crate::ABI_MINOR),
        "description": "The JSON bodies of the guest ABI (guest/ABI.md). Readers ignore fields they do not know.",
        "oneOf": bodies.iter().map(|(_, schema)| schema.as_value().clone()).collect::<Vec<_>>(),
        "$defs": defs,
    })
}

impl JsonSchema for Tensor {
    fn schema_name() -> Cow<'static, str> {
        "Tensor".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Written by hand, as its serde is: `data` is typed by `dtype`, and `bytes` may stand in for it.
        json_schema!({
            "description": "A tensor: its values as JSON numbers (`data`) or as little-endian bytes in base64 (`bytes`).",
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "The model's name for it; may be omitted."},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "dtype": {"enum": crate::TensorData::DTYPES},
                "data": {"type": "array", "items": {"type": ["number", "boolean"]}},
                "bytes": {"type": "string", "contentEncoding": "base64"}
            },
            "required": ["shape", "dtype"],
            "oneOf": [{"required": ["data"]}, {"required": ["bytes"]}]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::document;
    use std::path::Path;

    fn guest_dir() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    }

    #[test]
    fn the_checked_in_schema_is_current() {
        let generated = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        let path = guest_dir().join("abi/schema.json");
        if std::env::var_os("EDGECASCADE_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{} is not the schema of these types: regenerate it with \
             EDGECASCADE_BLESS=1 cargo test -p edgecascade-abi --features schema",
            path.display()
        );
    }

    #[test]
    fn abi_md_names_every_type_and_field_of_the_schema() {
        let doc = std::fs::read_to_string(guest_dir().join("ABI.md")).unwrap();
        let schema = document();
        let defs = schema["$defs"].as_object().unwrap();
        let mut missing = Vec::new();
        for (name, def) in defs {
            // The JSON names only: Rust type names of nested structs need not appear.
            for field in def["properties"].as_object().into_iter().flatten().map(|(k, _)| k) {
                if !doc.contains(&format!("`{field}`")) && !doc.contains(&format!("\"{field}\"")) {
                    missing.push(format!("{name}.{field}"));
                }
            }
            for value in def["enum"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(def["oneOf"].as_array().into_iter().flatten().filter_map(|v| v.get("const")))
            {
                let value = value.as_str().unwrap_or_default();
                if !doc.contains(&format!("`{value}`")) && !doc.contains(&format!("\"{value}\"")) {
                    missing.push(format!("{name} value {value}"));
                }
            }
        }
        for body in ["Answer", "Prompt", "Loaded", "LoadRequest"] {
            assert!(defs.contains_key(body), "{body} is in the schema");
        }
        assert!(missing.is_empty(), "guest/ABI.md does not mention {missing:?}");
    }
}
