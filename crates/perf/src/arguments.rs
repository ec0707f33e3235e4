//! The `KEY=VALUE,…` lists of the command line (`--queue-args`, `--consumer-args`,
//! `--message-properties`), split into pairs and typed as rabbitmq-perf-test types them.
//! Parsing only: what the pairs mean is up to the caller.

use anyhow::bail;
use lapin::types::{AMQPValue, FieldTable, ShortString};

/// The pairs of every list in `lists`, in order (a key given twice keeps both; a table keeps the
/// last). Entries are separated by commas; an empty entry (a trailing comma) is skipped; the
/// value is everything after the first `=`.
pub(crate) fn pairs(lists: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in lists.iter().flat_map(|l| l.split(',')) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((key, value)) = entry.split_once('=') else {
            bail!("expected KEY=VALUE, not {entry:?}");
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("a key is missing in {entry:?}");
        }
        out.push((key.to_string(), value.trim().to_string()));
    }
    Ok(out)
}

/// A value typed as rabbitmq-perf-test types it: `true`/`false` a boolean, an integer a long
/// (64-bit signed, AMQP type `l`), anything else a long string.
pub(crate) fn typed(value: &str) -> AMQPValue {
    match value {
        "true" => AMQPValue::Boolean(true),
        "false" => AMQPValue::Boolean(false),
        _ => match value.parse::<i64>() {
            Ok(n) => AMQPValue::LongLongInt(n),
            Err(_) => AMQPValue::LongString(value.into()),
        },
    }
}

/// The field table of `lists` (see [`pairs`] and [`typed`]), inserted over `base`.
pub(crate) fn table(mut base: FieldTable, lists: &[String]) -> anyhow::Result<FieldTable> {
    for (key, value) in pairs(lists)? {
        base.insert(short_string(key)?, typed(&value));
    }
    Ok(base)
}

/// `s` as an AMQP short string (at most 255 bytes).
pub(crate) fn short_string(s: impl Into<String>) -> anyhow::Result<ShortString> {
    let s = s.into();
    ShortString::try_new(s.clone()).map_err(|_| anyhow::anyhow!("longer than 255 bytes: {s:?}"))
}

/// The last value given for `key` in `lists`, if any.
pub(crate) fn last(lists: &[String], key: &str) -> anyhow::Result<Option<String>> {
    Ok(pairs(lists)?
        .into_iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_are_typed_as_perf_test_types_them() {
        assert_eq!(typed("10"), AMQPValue::LongLongInt(10));
        assert_eq!(typed("-1"), AMQPValue::LongLongInt(-1));
        assert_eq!(typed("true"), AMQPValue::Boolean(true));
        assert_eq!(typed("first"), AMQPValue::LongString("first".into()));
        assert_eq!(typed("30m"), AMQPValue::LongString("30m".into()));
    }

    #[test]
    fn lists_split_on_commas_repeat_and_the_last_value_wins_in_a_table() {
        let l = lists(&["x-max-priority=10,x-queue-type=stream,", "x-max-priority=5"]);
        let p = pairs(&l).expect("pairs");
        assert_eq!(p.len(), 3);
        assert_eq!(p[1], ("x-queue-type".to_string(), "stream".to_string()));
        let t = table(FieldTable::default(), &l).expect("table");
        assert_eq!(
            t.inner().get("x-max-priority"),
            Some(&AMQPValue::LongLongInt(5))
        );
        assert_eq!(
            last(&l, "x-queue-type").expect("parses").as_deref(),
            Some("stream")
        );
        assert_eq!(last(&l, "x-expires").expect("parses"), None);
    }

    #[test]
    fn an_entry_without_a_value_or_a_key_is_refused() {
        assert!(pairs(&lists(&["x-max-priority"])).is_err());
        assert!(pairs(&lists(&["=3"])).is_err());
        assert_eq!(
            pairs(&lists(&["a=b=c"])).expect("pairs"),
            [("a".to_string(), "b=c".to_string())]
        );
    }
}
