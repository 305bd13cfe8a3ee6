//! Custom ops: ops an operator registers in `PIXMILL_OPS_FILE`, served by workers in
//! any language through the broker contract (`docs/contract.md`).
//!
//! ```json
//! {"ops": [
//!   {"name": "posterize",
//!    "description": "Reduce each channel to 2^bits levels.",
//!    "params": {"type": "object",
//!               "properties": {"bits": {"type": "integer", "minimum": 1, "maximum": 8}},
//!               "required": ["bits"], "additionalProperties": false}}
//! ]}
//! ```
//!
//! The gateway checks a custom op's step against its `params` JSON Schema before it
//! stores anything (a 422 naming the parameter, as for a built-in op), declares the op's
//! queue `<prefix>.op.<name>`, and routes a job whose next step is the op there. The op
//! is listed in `/openapi.json` and on the upload page.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use pixmill_shared::{
    Step,
    messages::{CustomStep, valid_op_name},
};
use serde::Deserialize;
use serde_json::{Value, json};

/// One registered op.
pub struct CustomOp {
    /// The op's name in `steps`; also part of its queue's name.
    pub name: String,
    /// One line for people: the page and `/openapi.json` show it.
    pub description: String,
    /// The JSON Schema of its parameters (the step object without `op`).
    pub params: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for CustomOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomOp")
            .field("name", &self.name)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// The registry: every custom op, by name. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CustomOps(Arc<BTreeMap<String, CustomOp>>);

/// The file's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    ops: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(default)]
    description: String,
    /// Absent: the op takes no parameters.
    #[serde(default)]
    params: Option<Value>,
}

/// Most ops one file may register: each is a queue on the broker and a series of
/// metrics.
pub const MAX_OPS: usize = 100;

impl CustomOps {
    /// Reads and checks the registry at `path`. The error says what is wrong and where.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text)
    }

    /// Parses and checks a registry: names valid and not built in, schemas valid.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = serde_json::from_str(text).map_err(|e| {
            format!("not a registry of ops ({e}); expected {{\"ops\": [{{\"name\": …, \"description\": …, \"params\": {{JSON Schema}}}}]}}")
        })?;
        if file.ops.len() > MAX_OPS {
            return Err(format!(
                "{} ops registered; the limit is {MAX_OPS}",
                file.ops.len()
            ));
        }
        let mut ops = BTreeMap::new();
        for entry in file.ops {
            let name = entry.name;
            if Step::OPS.contains(&name.as_str()) {
                return Err(format!("op {name:?} is a built-in op; pick another name"));
            }
            if !valid_op_name(&name) {
                return Err(format!(
                    "op {name:?} is not an op name: 1 to 40 lower-case letters, digits and \
                     `_`, starting with a letter"
                ));
            }
            let params = entry.params.unwrap_or_else(
                || json!({"type": "object", "properties": {}, "additionalProperties": false}),
            );
            if params.get("type").and_then(Value::as_str) != Some("object") {
                return Err(format!(
                    "op {name:?}: params must be a JSON Schema of \"type\": \"object\" (the \
                     step's fields beside `op`)"
                ));
            }
            if params
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.contains_key("op"))
            {
                return Err(format!(
                    "op {name:?}: `op` names the op and cannot be a parameter"
                ));
            }
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&params)
                .map_err(|e| format!("op {name:?}: its params schema is not valid: {e}"))?;
            let op = CustomOp {
                name: name.clone(),
                description: entry.description,
                params,
                validator,
            };
            if ops.insert(name.clone(), op).is_some() {
                return Err(format!("op {name:?} is registered twice"));
            }
        }
        Ok(Self(Arc::new(ops)))
    }

    /// The op called `name`, if registered.
    pub fn get(&self, name: &str) -> Option<&CustomOp> {
        self.0.get(name)
    }

    /// Every op, by name.
    pub fn iter(&self) -> impl Iterator<Item = &CustomOp> {
        self.0.values()
    }

    /// Every op's name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every op a job may name, for error messages: the built-in ones, then these.
    pub fn all_names(&self) -> String {
        Step::OPS
            .iter()
            .copied()
            .chain(self.0.keys().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks a custom step against its op's schema. The error names the op's problem:
    /// an op nobody registered, or each parameter that breaks the schema.
    pub fn check(&self, step: &CustomStep) -> Result<(), Refused> {
        let Some(op) = self.get(&step.op) else {
            return Err(Refused::UnknownOp(format!(
                "unknown op {:?}; expected one of {}",
                step.op,
                self.all_names()
            )));
        };
        let params = Value::Object(step.params.clone());
        let problems: Vec<String> = op
            .validator
            .iter_errors(&params)
            .map(|e| {
                let at = e.instance_path().to_string();
                let param = at.trim_start_matches('/');
                if param.is_empty() {
                    e.to_string()
                } else {
                    format!("parameter `{param}`: {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Refused::Invalid(problems.join("; ")))
        }
    }
}

/// Why a custom step was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No such op is registered.
    UnknownOp(String),
    /// Its parameters break the op's schema; the message names each one.
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> CustomOps {
        CustomOps::parse(
            r#"{"ops": [
                {"name": "posterize", "description": "fewer levels",
                 "params": {"type": "object",
                            "properties": {"bits": {"type": "integer", "minimum": 1, "maximum": 8}},
                            "required": ["bits"], "additionalProperties": false}},
                {"name": "invert"}
            ]}"#,
        )
        .expect("a valid registry")
    }

    fn step(op: &str, params: Value) -> CustomStep {
        CustomStep {
            op: op.into(),
            params: params.as_object().cloned().expect("an object"),
        }
    }

    #[test]
    fn a_step_is_checked_against_its_ops_schema() {
        let ops = registry();
        assert_eq!(ops.check(&step("posterize", json!({"bits": 3}))), Ok(()));
        assert_eq!(ops.check(&step("invert", json!({}))), Ok(()));
        let Err(Refused::Invalid(message)) = ops.check(&step("posterize", json!({"bits": 0})))
        else {
            panic!("bits 0 is below the minimum");
        };
        assert!(message.contains("parameter `bits`"), "{message}");
        assert!(message.contains("minimum of 1"), "{message}");
        let Err(Refused::Invalid(message)) = ops.check(&step("posterize", json!({}))) else {
            panic!("bits is required");
        };
        assert!(
            message.contains("\"bits\" is a required property"),
            "{message}"
        );
        let Err(Refused::Invalid(message)) = ops.check(&step("invert", json!({"strength": 2})))
        else {
            panic!("invert takes no parameters");
        };
        assert!(message.contains("strength"), "{message}");
        let Err(Refused::UnknownOp(message)) = ops.check(&step("sharpen", json!({}))) else {
            panic!("sharpen is not registered");
        };
        assert!(message.contains("unknown op \"sharpen\""), "{message}");
        assert!(message.contains("resize, crop"), "{message}");
        assert!(message.contains("invert, posterize"), "{message}");
    }

    #[test]
    fn a_broken_registry_is_refused_with_the_reason() {
        for (text, expected) in [
            (r#"{"ops": [{"name": "blur"}]}"#, "is a built-in op"),
            (r#"{"ops": [{"name": "Bad-Name"}]}"#, "is not an op name"),
            (
                r#"{"ops": [{"name": "a"}, {"name": "a"}]}"#,
                "registered twice",
            ),
            (
                r#"{"ops": [{"name": "a", "params": {"type": "array"}}]}"#,
                "\"type\": \"object\"",
            ),
            (
                r#"{"ops": [{"name": "a", "params": {"type": "object", "properties": {"x": {"type": "nope"}}}}]}"#,
                "its params schema is not valid",
            ),
            (r#"{"opz": []}"#, "not a registry of ops"),
        ] {
            let error = CustomOps::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
