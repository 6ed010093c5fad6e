//! `db_query`'s filters, as ipyparallel's (MongoDB's): `{key: value}` is
//! equality, `{key: {"$op": value}}` compares with `$in`, `$nin`, `$lt`,
//! `$gt`, `$lte`, `$gte`, `$ne` (and `$eq`); every key must match.
//! Timestamps are ISO 8601 strings in UTC, so they compare as strings.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// The operators a filter may use.
pub const OPERATORS: [&str; 8] = ["$in", "$nin", "$lt", "$gt", "$lte", "$gte", "$ne", "$eq"];

/// A query read and checked: (key, operator, operand) triples.
#[derive(Debug)]
pub struct Query {
    tests: Vec<(String, String, Value)>,
}

impl Query {
    /// Reads `query` (a JSON object); an unknown operator or a malformed
    /// one is an error naming it and the operators that exist.
    pub fn parse(query: &Value) -> Result<Query, String> {
        let Some(query) = query.as_object() else {
            return Err("a query is a dict of {key: value or {operator: value}}".into());
        };
        let mut tests = Vec::new();
        for (key, test) in query {
            match test {
                Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => {
                    for (op, operand) in ops {
                        if !OPERATORS.contains(&op.as_str()) {
                            return Err(format!(
                                "unknown operator {op:?} in the query on {key:?} (operators: {})",
                                OPERATORS.join(", ")
                            ));
                        }
                        if matches!(op.as_str(), "$in" | "$nin") && !operand.is_array() {
                            return Err(format!("{op} on {key:?} needs a list"));
                        }
                        tests.push((key.clone(), op.clone(), operand.clone()));
                    }
                }
                value => tests.push((key.clone(), "$eq".into(), value.clone())),
            }
        }
        Ok(Query { tests })
    }

    pub fn matches(&self, record: &Map<String, Value>) -> bool {
        self.tests.iter().all(|(key, op, operand)| {
            let value = record.get(key).unwrap_or(&Value::Null);
            match op.as_str() {
                "$eq" => value == operand,
                "$ne" => value != operand,
                "$in" => operand.as_array().is_some_and(|l| l.contains(value)),
                "$nin" => operand.as_array().is_some_and(|l| !l.contains(value)),
                "$lt" => compare(value, operand) == Some(Ordering::Less),
                "$gt" => compare(value, operand) == Some(Ordering::Greater),
                "$lte" => matches!(
                    compare(value, operand),
                    Some(Ordering::Less | Ordering::Equal)
                ),
                "$gte" => matches!(
                    compare(value, operand),
                    Some(Ordering::Greater | Ordering::Equal)
                ),
                _ => false,
            }
        })
    }
}

/// Numbers as numbers, strings (timestamps) as strings; nothing else
/// (None included) is ordered.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn operators_compare_as_mongodb_does() {
        let r = record(json!({"engine_id": 1, "completed": "2026-01-02T00:00:00Z", "label": "a"}));
        let q = |v: Value| Query::parse(&v).unwrap().matches(&r);
        assert!(q(json!({"engine_id": 1})));
        assert!(!q(json!({"engine_id": 2})));
        assert!(q(json!({"engine_id": {"$in": [0, 1]}})));
        assert!(q(json!({"engine_id": {"$nin": [0, 2]}})));
        assert!(q(json!({"engine_id": {"$gte": 1, "$lt": 2}})));
        assert!(!q(json!({"engine_id": {"$gt": 1}})));
        assert!(q(json!({"completed": {"$gt": "2026-01-01T00:00:00Z"}})));
        assert!(q(json!({"completed": {"$ne": null}, "label": "a"})));
        assert!(q(json!({"started": null})));
        assert!(!q(json!({"started": {"$lt": "2030"}})));
    }

    #[test]
    fn unknown_operators_name_the_ones_that_exist() {
        let e = Query::parse(&json!({"engine_id": {"$regex": "x"}})).unwrap_err();
        assert!(e.contains("$regex") && e.contains("$in, $nin"), "{e}");
        assert!(Query::parse(&json!({"a": {"$in": 3}})).is_err());
        assert!(Query::parse(&json!([1])).is_err());
    }
}
