//! The query parameters of RabbitMQ's list endpoints (`rabbit_mgmt_util`): `sort` and
//! `sort_reverse`, `columns`, and pagination (`page`, `page_size`, `name`, `use_regex`) with
//! RabbitMQ's paged reply and its 400s. Works on the JSON items a handler built; knows nothing
//! of brokers.

use std::cmp::Ordering;

use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// The page size when `page` comes alone (RabbitMQ's `?DEFAULT_PAGE_SIZE`).
const DEFAULT_PAGE_SIZE: i64 = 100;
/// The largest page size RabbitMQ accepts (`?MAX_PAGE_SIZE`).
const MAX_PAGE_SIZE: i64 = 500;
/// RabbitMQ's reason for a `page` or `page_size` that is not an integer, or a bad `name` regex.
const INVALID: &str = "Pagination parameters are invalid";

/// How an endpoint lists, with the keys it always sorts by (after the `sort` asked for).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Listing {
    /// Sorted, columns, and pages when `page` is given: queues, exchanges, vhosts, users,
    /// connections, channels.
    Paged(&'static [&'static str]),
    /// Sorted and columns only; `page` is ignored, as RabbitMQ ignores it for bindings,
    /// consumers and permissions.
    Sorted(&'static [&'static str]),
}

/// RabbitMQ's default sort of most lists.
pub(crate) const BY_VHOST_AND_NAME: Listing = Listing::Paged(&["vhost", "name"]);
/// Vhosts and users.
pub(crate) const BY_NAME: Listing = Listing::Paged(&["name"]);
/// Bindings (`rabbit_mgmt_wm_bindings`).
pub(crate) const BINDINGS: Listing = Listing::Sorted(&[
    "vhost",
    "source",
    "type",
    "destination",
    "routing_key",
    "properties_key",
]);
/// Policies and operator policies (`rabbit_mgmt_wm_policies`): by priority, not paged.
pub(crate) const BY_PRIORITY: Listing = Listing::Sorted(&["priority"]);
/// Consumers and permissions: no key of theirs is sorted on by default.
pub(crate) const UNSORTED: Listing = Listing::Sorted(&[]);

/// The list parameters of one request (the first of each, as RabbitMQ reads them).
#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    sort: Option<String>,
    reverse: bool,
    /// Dotted paths (`message_stats.publish`), `None` for every column.
    columns: Option<Vec<Vec<String>>>,
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: bool,
}

/// A valid page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    number: i64,
    size: i64,
}

impl ListQuery {
    /// Reads the parameters from the request's decoded query pairs.
    pub(crate) fn new(pairs: &[(String, String)]) -> ListQuery {
        let first = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        ListQuery {
            sort: first("sort").filter(|s| !s.is_empty()),
            reverse: first("sort_reverse").as_deref() == Some("true"),
            columns: first("columns").map(|c| {
                c.split(',')
                    .filter(|c| !c.is_empty())
                    .map(|c| {
                        c.split('.')
                            .filter(|k| !k.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .collect()
            }),
            page: first("page"),
            page_size: first("page_size"),
            name: first("name").filter(|n| !n.is_empty()),
            use_regex: first("use_regex").as_deref() == Some("true"),
        }
    }

    /// The page asked for, `None` without `page`; RabbitMQ's 400s for bad values.
    fn page(&self) -> Result<Option<Page>, ApiError> {
        let int = |v: &Option<String>| match v {
            None => Ok(None),
            Some(s) => s
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(INVALID)),
        };
        let (number, size) = (int(&self.page)?, int(&self.page_size)?);
        match (number, size) {
            (None, _) => Ok(None),
            (Some(number), None) if number > 0 => Ok(Some(Page {
                number,
                size: DEFAULT_PAGE_SIZE,
            })),
            (Some(number), Some(size)) if number > 0 && size > 0 && size <= MAX_PAGE_SIZE => {
                Ok(Some(Page { number, size }))
            }
            (Some(number), size) => Err(ApiError::bad_request_as(
                "invalid_pagination_parameters",
                format!(
                    "Invalid pagination parameters: page number {number}, page size {}",
                    size.map_or_else(|| "undefined".to_owned(), |s| s.to_string())
                ),
            )),
        }
    }

    /// The reply to a list request: `items` sorted (by `sort`, then the endpoint's keys),
    /// reversed with `sort_reverse=true`, cut to `columns`; with `page` on a paged endpoint,
    /// filtered by `name` and answered as RabbitMQ's page object.
    pub(crate) fn reply(&self, mut items: Vec<Value>, listing: Listing) -> Result<Value, ApiError> {
        let (defaults, page) = match listing {
            Listing::Paged(defaults) => (defaults, self.page()?),
            Listing::Sorted(defaults) => (defaults, None),
        };
        let mut keys: Vec<&str> = self.sort.as_deref().into_iter().collect();
        keys.extend(
            defaults
                .iter()
                .filter(|k| Some(**k) != self.sort.as_deref()),
        );
        if !keys.is_empty() {
            items.sort_by(|a, b| {
                keys.iter()
                    .map(|k| erlang_order(dotted(a, k), dotted(b, k)))
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            });
        }
        if self.reverse {
            items.reverse();
        }
        let Some(page) = page else {
            return Ok(Value::from(
                items.iter().map(|i| self.cut(i)).collect::<Vec<_>>(),
            ));
        };
        let total = items.len();
        let filtered = self.filter(items)?;
        let count = filtered.len();
        let offset =
            usize::try_from((page.number - 1).saturating_mul(page.size)).unwrap_or(usize::MAX);
        if offset > count {
            return Err(ApiError::bad_request_as(
                "page_out_of_range",
                format!(
                    "Page out of range, page: {} page size: {}, len: {count}",
                    page.number, page.size
                ),
            ));
        }
        let size = usize::try_from(page.size).unwrap_or(usize::MAX);
        let shown: Vec<Value> = filtered
            .iter()
            .skip(offset)
            .take(size)
            .map(|i| self.cut(i))
            .collect();
        Ok(json!({
            "total_count": total,
            "item_count": shown.len(),
            "filtered_count": count,
            "page": page.number,
            "page_size": page.size,
            "page_count": count.div_ceil(size),
            "items": shown,
        }))
    }

    /// The items whose `name` contains the `name` parameter (ASCII case ignored), or matches it
    /// as a case-insensitive regular expression with `use_regex=true`.
    fn filter(&self, items: Vec<Value>) -> Result<Vec<Value>, ApiError> {
        let Some(wanted) = &self.name else {
            return Ok(items);
        };
        if items.is_empty() {
            return Ok(items);
        }
        let name = |i: &Value| i.get("name").and_then(Value::as_str).map(str::to_owned);
        if self.use_regex {
            let re = regex::RegexBuilder::new(wanted)
                .case_insensitive(true)
                .build()
                .map_err(|_| ApiError::bad_request(INVALID))?;
            Ok(items
                .into_iter()
                .filter(|i| name(i).is_some_and(|n| re.is_match(&n)))
                .collect())
        } else {
            let wanted = wanted.to_ascii_lowercase();
            Ok(items
                .into_iter()
                .filter(|i| name(i).is_some_and(|n| n.to_ascii_lowercase().contains(&wanted)))
                .collect())
        }
    }

    /// An item cut to the `columns` asked for (all of it without `columns`).
    pub(crate) fn cut(&self, item: &Value) -> Value {
        match &self.columns {
            None => item.clone(),
            Some(columns) => {
                let paths: Vec<&[String]> = columns.iter().map(Vec::as_slice).collect();
                columns_of(item, &paths)
            }
        }
    }
}

/// The parts of `v` named by `paths` (each a list of keys, outermost first); lists are cut
/// item by item, as RabbitMQ's `extract_column_items`.
fn columns_of(v: &Value, paths: &[&[String]]) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, child) in map {
                if !paths.iter().any(|p| p.first() == Some(k)) {
                    continue;
                }
                let whole = paths.iter().any(|p| p.len() == 1 && p[0] == *k);
                let value = if whole {
                    child.clone()
                } else {
                    let deeper: Vec<&[String]> = paths
                        .iter()
                        .filter(|p| p.first() == Some(k))
                        .map(|p| &p[1..])
                        .collect();
                    columns_of(child, &deeper)
                };
                out.insert(k.clone(), value);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| columns_of(i, paths)).collect()),
        other => other.clone(),
    }
}

/// The value at a dotted path (`message_stats.publish`); `None` where a key is missing (RabbitMQ
/// sorts that as 0).
fn dotted<'a>(item: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|k| !k.is_empty())
        .try_fold(item, |v, k| v.get(k))
}

/// Erlang's order of the terms RabbitMQ sorts: numbers (a missing value counts as 0) before
/// atoms (`false`, `null`, `true`), objects and lists, and strings last, compared bytewise.
fn erlang_order(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Number(_)) => 0,
            Some(Value::Bool(_) | Value::Null) => 1,
            Some(Value::Object(_)) => 2,
            Some(Value::Array(_)) => 3,
            Some(Value::String(_)) => 4,
        }
    }
    fn number(v: Option<&Value>) -> f64 {
        v.and_then(Value::as_f64).unwrap_or(0.0)
    }
    fn atom(v: Option<&Value>) -> &'static str {
        match v {
            Some(Value::Bool(true)) => "true",
            Some(Value::Bool(false)) => "false",
            _ => "null",
        }
    }
    match rank(a).cmp(&rank(b)) {
        Ordering::Equal => match (a, b) {
            (Some(Value::String(x)), Some(Value::String(y))) => x.as_bytes().cmp(y.as_bytes()),
            (Some(Value::Object(_) | Value::Array(_)), _) => {
                let text = |v: Option<&Value>| v.map(Value::to_string).unwrap_or_default();
                text(a).cmp(&text(b))
            }
            _ if rank(a) == 1 => atom(a).cmp(atom(b)),
            _ => number(a).total_cmp(&number(b)),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &[(&str, &str)]) -> ListQuery {
        ListQuery::new(
            &q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    fn queues() -> Vec<Value> {
        vec![
            json!({"vhost": "/", "name": "b", "messages": 3, "message_stats": {"publish": 9}}),
            json!({"vhost": "/", "name": "A", "messages": 10}),
            json!({"vhost": "/", "name": "c", "messages": 1, "message_stats": {"publish": 2}}),
        ]
    }

    fn names(v: &Value) -> Vec<&str> {
        v.as_array()
            .or_else(|| v["items"].as_array())
            .map(|a| a.iter().filter_map(|i| i["name"].as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn lists_sort_by_the_default_keys_then_the_one_asked_for() {
        let r = query(&[]).reply(queues(), BY_VHOST_AND_NAME);
        assert_eq!(names(r.as_ref().expect("a list")), ["A", "b", "c"]);
        let r = query(&[("sort", "messages")]).reply(queues(), BY_VHOST_AND_NAME);
        assert_eq!(names(&r.expect("a list")), ["c", "b", "A"]);
        let r = query(&[("sort", "message_stats.publish"), ("sort_reverse", "true")])
            .reply(queues(), BY_VHOST_AND_NAME);
        assert_eq!(
            names(&r.expect("a list")),
            ["b", "c", "A"],
            "a missing value sorts as 0"
        );
    }

    #[test]
    fn columns_keep_only_the_keys_asked_for_nested_too() {
        let r = query(&[("columns", "name,message_stats.publish")])
            .reply(queues(), BY_VHOST_AND_NAME)
            .expect("a list");
        assert_eq!(
            r,
            json!([
                {"name": "A"},
                {"name": "b", "message_stats": {"publish": 9}},
                {"name": "c", "message_stats": {"publish": 2}},
            ])
        );
    }

    #[test]
    fn a_page_is_rabbitmqs_page_object_filtered_by_name() {
        let r = query(&[("page", "2"), ("page_size", "1")])
            .reply(queues(), BY_VHOST_AND_NAME)
            .expect("a page");
        assert_eq!(
            r,
            json!({"filtered_count": 3, "item_count": 1, "items": [{"vhost": "/", "name": "b", "messages": 3, "message_stats": {"publish": 9}}],
                   "page": 2, "page_count": 3, "page_size": 1, "total_count": 3})
        );
        let r = query(&[("page", "1"), ("name", "a")])
            .reply(queues(), BY_VHOST_AND_NAME)
            .expect("a page");
        assert_eq!((names(&r), r["page_size"].clone()), (vec!["A"], json!(100)));
        let r = query(&[("page", "1"), ("name", "^[bc]$"), ("use_regex", "true")])
            .reply(queues(), BY_VHOST_AND_NAME)
            .expect("a page");
        assert_eq!(
            (
                names(&r),
                r["filtered_count"].clone(),
                r["total_count"].clone()
            ),
            (vec!["b", "c"], json!(2), json!(3))
        );
        let r = query(&[("name", "a")])
            .reply(queues(), BY_VHOST_AND_NAME)
            .expect("a list");
        assert_eq!(names(&r).len(), 3, "name filters pages only, as RabbitMQ's");
    }

    #[test]
    fn bad_pages_are_refused_with_rabbitmqs_reasons() {
        let refused = |q: &[(&str, &str)]| {
            let e = query(q)
                .reply(queues(), BY_VHOST_AND_NAME)
                .expect_err("refused");
            (e.status.as_u16(), e.error, e.reason)
        };
        assert_eq!(
            refused(&[("page", "1"), ("page_size", "501")]),
            (
                400,
                "invalid_pagination_parameters",
                "Invalid pagination parameters: page number 1, page size 501".into()
            )
        );
        assert_eq!(
            refused(&[("page", "0")]),
            (
                400,
                "invalid_pagination_parameters",
                "Invalid pagination parameters: page number 0, page size undefined".into()
            )
        );
        assert_eq!(
            refused(&[("page", "x")]),
            (
                400,
                "bad_request",
                "Pagination parameters are invalid".into()
            )
        );
        assert_eq!(
            refused(&[("page", "3"), ("page_size", "2")]),
            (
                400,
                "page_out_of_range",
                "Page out of range, page: 3 page size: 2, len: 3".into()
            )
        );
        assert_eq!(
            refused(&[("page", "1"), ("name", "("), ("use_regex", "true")]),
            (
                400,
                "bad_request",
                "Pagination parameters are invalid".into()
            )
        );
        assert!(
            query(&[("page", "2"), ("page_size", "3")])
                .reply(queues(), BY_VHOST_AND_NAME)
                .is_ok(),
            "the page just after the last item is empty, not out of range"
        );
        assert!(
            query(&[("page", "x")]).reply(queues(), BINDINGS).is_ok(),
            "lists without pages ignore page"
        );
    }
}
