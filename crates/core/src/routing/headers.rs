//! The headers exchange match (`x-match` = all, any, all-with-x, any-with-x), as RabbitMQ's
//! `rabbit_exchange_type_headers` defines it.

use warren_wire::{FieldTable, FieldValue};

/// Checks a headers binding's arguments; the error is the text of a 406 PRECONDITION_FAILED.
pub fn validate_headers_binding(arguments: &FieldTable) -> Result<(), String> {
    match arguments.get("x-match") {
        None => Ok(()),
        Some(v) => match v.as_str() {
            Some("all" | "any" | "all-with-x" | "any-with-x") => Ok(()),
            _ => Err(format!(
                "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                describe(v)
            )),
        },
    }
}

fn describe(v: &FieldValue) -> String {
    match v.as_str() {
        Some(s) => format!("<<\"{s}\">>"),
        None => format!("{v:?}"),
    }
}

fn values_equal(a: &FieldValue, b: &FieldValue) -> bool {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x == y,
        _ => match (a, b) {
            (FieldValue::LongStr(x), FieldValue::LongStr(y)) => x == y,
            _ => a == b,
        },
    }
}

/// Whether a message with `headers` matches a binding with `arguments`. Binding keys starting
/// with `x-` take part only in the `-with-x` modes; a void binding value matches any value.
pub(super) fn matches(arguments: &FieldTable, headers: &FieldTable) -> bool {
    let mode = arguments
        .get("x-match")
        .and_then(FieldValue::as_str)
        .unwrap_or("all");
    let (all, with_x) = match mode {
        "any" => (false, false),
        "all-with-x" => (true, true),
        "any-with-x" => (false, true),
        _ => (true, false),
    };
    let mut keys = arguments
        .iter()
        .filter(|(k, _)| *k != "x-match" && (with_x || !k.starts_with("x-")));
    let hit = |(k, v): (&str, &FieldValue)| match headers.get(k) {
        Some(h) => matches!(v, FieldValue::Void) || values_equal(v, h),
        None => false,
    };
    if all {
        keys.all(hit)
    } else {
        keys.any(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(kv: &[(&str, FieldValue)]) -> FieldTable {
        kv.iter().cloned().collect()
    }

    #[test]
    fn all_and_any() {
        let all = table(&[
            ("x-match", "all".into()),
            ("a", "1".into()),
            ("b", FieldValue::I32(2)),
        ]);
        let any = table(&[
            ("x-match", "any".into()),
            ("a", "1".into()),
            ("b", FieldValue::I32(2)),
        ]);
        let both = table(&[("a", "1".into()), ("b", FieldValue::I64(2))]);
        let one = table(&[("a", "1".into())]);
        assert!(matches(&all, &both));
        assert!(!matches(&all, &one));
        assert!(matches(&any, &one));
        assert!(!matches(&any, &FieldTable::default()));
    }

    #[test]
    fn x_keys_count_only_with_x() {
        let all = table(&[("x-match", "all".into()), ("x-k", "v".into())]);
        let all_x = table(&[("x-match", "all-with-x".into()), ("x-k", "v".into())]);
        let any_x = table(&[("x-match", "any-with-x".into()), ("x-k", "v".into())]);
        assert!(matches(&all, &FieldTable::default()));
        assert!(!matches(&all_x, &FieldTable::default()));
        assert!(matches(&all_x, &table(&[("x-k", "v".into())])));
        assert!(matches(&any_x, &table(&[("x-k", "v".into())])));
    }

    #[test]
    fn void_matches_presence_and_bad_x_match_is_refused() {
        let b = table(&[("a", FieldValue::Void)]);
        assert!(matches(&b, &table(&[("a", FieldValue::Bool(false))])));
        assert!(!matches(&b, &FieldTable::default()));
        assert!(validate_headers_binding(&table(&[("x-match", "some".into())])).is_err());
        assert!(validate_headers_binding(&table(&[("x-match", "any".into())])).is_ok());
    }
}
