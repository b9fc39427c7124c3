//! Spans and log records as entries: the mapping `docs/OTLP.md` tabulates. The GenAI
//! semantic conventions give the model and the tokens (with the older names instrumentations
//! still send); Claude Code's `claude_code.*` log records give theirs flat, with `cost_usd`,
//! and count input tokens without the cached ones, where witness counts them in.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use witness_protocol::limits::{
    MAX_COMPONENT_LEN, MAX_EVENT_LEN, MAX_INTEGER, MAX_MODEL_LEN, MAX_PAYLOAD_LEN,
};
use witness_protocol::{Cost, Entry};

use crate::store::job::{ReceivedKey, received_key};

/// An attribute value longer than this is cut when the payload would be over its limit.
const LONG_VALUE: usize = 1024;

/// Nesting past this depth in an attribute value is shown as a string.
const MAX_DEPTH: usize = 16;

/// The component of an entry whose resource has no `service.name`, as OpenTelemetry's SDKs
/// name such a service.
const UNKNOWN_SERVICE: &str = "unknown_service";

/// Where an export came from, recorded in each of its entries' payloads so that an entry
/// from HTTP never passes for one with Unix credentials (it has none).
#[derive(Debug, Clone)]
pub struct Source {
    /// The listener (`otlp`).
    pub listener: &'static str,
    /// The peer's address.
    pub peer: String,
    /// The bearer token's name, when one was shown.
    pub token: Option<String>,
}

impl Source {
    /// The source as the JSON object its entries' payloads hold.
    fn text(&self) -> String {
        let mut source = json!({"listener": self.listener, "peer": self.peer});
        if let Some(token) = &self.token {
            source["token"] = json!(token);
        }
        source.to_string()
    }
}

/// One span or log record, as an entry, with the key that stores it once.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The entry.
    pub entry: Entry,
    /// What makes a re-sent item the same item: the item's time, then SHA-256 of
    /// `witness.otlp.span` and the trace and span ids, or of `witness.otlp.log` and the
    /// record's encoding.
    pub key: ReceivedKey,
    /// The model's provider, which chooses among prices: `gen_ai.provider.name`, else the
    /// older `gen_ai.system`; `anthropic` for Claude Code's records.
    pub provider: Option<String>,
}

/// The provider a GenAI item names.
fn provider_of(attributes: &Attributes<'_>) -> Option<String> {
    attributes
        .text("gen_ai.provider.name")
        .or_else(|| attributes.text("gen_ai.system"))
        .filter(|name| !name.is_empty())
        .map(|name| clip(name, witness_protocol::limits::MAX_PRICED_BY_LEN).to_owned())
}

/// What the items of one resource and scope share in their payloads, as JSON text made
/// once for all of them: the resource's attributes (whole, and cut when an item's payload
/// would be too long), the scope and the source.
pub struct Context<'a> {
    resource: &'a Resource,
    resource_text: String,
    resource_cut: std::cell::OnceCell<String>,
    scope: Option<String>,
    source: &'a str,
}

impl<'a> Context<'a> {
    /// The context of the items of `resource` in `scope`, from `source` (as
    /// `Source::text`).
    fn new(
        resource: &'a Resource,
        scope: Option<&opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
        source: &'a str,
    ) -> Self {
        Context {
            resource,
            resource_text: object_cut(&resource.attributes, None).to_string(),
            resource_cut: std::cell::OnceCell::new(),
            scope: scope
                .map(|scope| json!({"name": scope.name, "version": scope.version}).to_string()),
            source,
        }
    }

    /// The resource's attributes with every value over `LONG_VALUE` cut.
    fn resource_cut(&self) -> &str {
        self.resource_cut
            .get_or_init(|| object_cut(&self.resource.attributes, Some(LONG_VALUE)).to_string())
    }
}

/// The spans of a request as entries, in order.
pub fn spans(request: &ExportTraceServiceRequest, source: &Source) -> Vec<Mapped> {
    let mut out = Vec::new();
    let source = source.text();
    for resource_spans in &request.resource_spans {
        let resource = Resource::default();
        let resource = resource_spans.resource.as_ref().unwrap_or(&resource);
        let component = component_of(resource);
        for scope_spans in &resource_spans.scope_spans {
            let context = Context::new(resource, scope_spans.scope.as_ref(), &source);
            for span in &scope_spans.spans {
                out.push(span_entry(span, &component, &context));
            }
        }
    }
    out
}

/// The log records of a request as entries, in order.
pub fn logs(request: &ExportLogsServiceRequest, source: &Source) -> Vec<Mapped> {
    let mut out = Vec::new();
    let source = source.text();
    for resource_logs in &request.resource_logs {
        let resource = Resource::default();
        let resource = resource_logs.resource.as_ref().unwrap_or(&resource);
        let component = component_of(resource);
        for scope_logs in &resource_logs.scope_logs {
            let context = Context::new(resource, scope_logs.scope.as_ref(), &source);
            for record in &scope_logs.log_records {
                out.push(log_entry(record, &component, &context));
            }
        }
    }
    out
}

fn span_entry(span: &Span, component: &str, context: &Context<'_>) -> Mapped {
    let attributes = Attributes(&span.attributes);
    let event = attributes
        .text("gen_ai.operation.name")
        .filter(|name| !name.is_empty())
        .unwrap_or(&span.name);
    let kinds = [
        "SPAN_KIND_UNSPECIFIED",
        "SPAN_KIND_INTERNAL",
        "SPAN_KIND_SERVER",
        "SPAN_KIND_CLIENT",
        "SPAN_KIND_PRODUCER",
        "SPAN_KIND_CONSUMER",
    ];
    let status = span.status.as_ref().map(|status| {
        let code = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"]
            .get(status.code as usize)
            .copied()
            .unwrap_or("STATUS_CODE_UNSET");
        json!({"code": code, "message": status.message})
    });
    let mut payload = Map::new();
    payload.insert("otlp".into(), json!("span"));
    payload.insert("name".into(), json!(span.name));
    payload.insert("span_id".into(), json!(hex::encode(&span.span_id)));
    if !span.parent_span_id.is_empty() {
        payload.insert(
            "parent_span_id".into(),
            json!(hex::encode(&span.parent_span_id)),
        );
    }
    payload.insert(
        "kind".into(),
        json!(kinds.get(span.kind as usize).copied().unwrap_or(kinds[0])),
    );
    payload.insert("start_ns".into(), json!(span.start_time_unix_nano));
    payload.insert("end_ns".into(), json!(span.end_time_unix_nano));
    payload.insert(
        "duration_ns".into(),
        json!(
            span.end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano)
        ),
    );
    if let Some(status) = status {
        payload.insert("status".into(), status);
    }
    if !span.events.is_empty() {
        let events: Vec<Value> = span
            .events
            .iter()
            .map(|event| {
                json!({
                    "name": event.name,
                    "time_ns": event.time_unix_nano,
                    "attributes": object(&event.attributes),
                })
            })
            .collect();
        payload.insert("events".into(), json!(events));
    }
    let mut hasher = Sha256::new();
    hasher.update(b"witness.otlp.span");
    hasher.update(&span.trace_id);
    hasher.update(&span.span_id);
    Mapped {
        entry: entry(
            event,
            component,
            trace_of(&span.trace_id),
            span.start_time_unix_nano,
            Parts {
                payload,
                attributes: &span.attributes,
                context,
            },
            genai_cost(&attributes),
        ),
        key: received_key(span.start_time_unix_nano, hasher.finalize().into()),
        provider: provider_of(&attributes),
    }
}

fn log_entry(record: &LogRecord, component: &str, context: &Context<'_>) -> Mapped {
    let attributes = Attributes(&record.attributes);
    let body = record.body.as_ref().and_then(|body| match &body.value {
        Some(any_value::Value::StringValue(text)) => Some(text.as_str()),
        _ => None,
    });
    let named = attributes
        .text("event.name")
        .filter(|name| !name.is_empty())
        .or((!record.event_name.is_empty()).then_some(record.event_name.as_str()));
    // Claude Code names its events `api_request` in `event.name` and
    // `claude_code.api_request` in the body: the body is the fuller name.
    let event = match (named, body) {
        (Some(name), Some(body)) if body.ends_with(&format!(".{name}")) && names(body) => body,
        (Some(name), _) => name,
        (None, Some(body)) if names(body) => body,
        (None, _) => "log",
    };
    let time = if record.time_unix_nano > 0 {
        record.time_unix_nano
    } else {
        record.observed_time_unix_nano
    };
    let mut payload = Map::new();
    payload.insert("otlp".into(), json!("log"));
    if let Some(body) = &record.body {
        payload.insert("body".into(), value(body, 0));
    }
    if record.severity_number != 0 {
        payload.insert("severity_number".into(), json!(record.severity_number));
    }
    if !record.severity_text.is_empty() {
        payload.insert("severity".into(), json!(record.severity_text));
    }
    payload.insert("time_ns".into(), json!(record.time_unix_nano));
    if !record.span_id.is_empty() {
        payload.insert("span_id".into(), json!(hex::encode(&record.span_id)));
    }
    let claude = event.starts_with("claude_code.") || component == "claude-code";
    let cost = if claude {
        claude_cost(&attributes)
    } else {
        genai_cost(&attributes)
    };
    // A Claude Code session is the trace its events belong to when the record has none.
    let trace = trace_of(&record.trace_id).or_else(|| {
        attributes
            .text("session.id")
            .filter(|id| !id.is_empty())
            .map(|id| clip(id, witness_protocol::limits::MAX_TRACE_ID_LEN).to_owned())
    });
    let mut hasher = Sha256::new();
    hasher.update(b"witness.otlp.log");
    hasher.update(component.as_bytes());
    hasher.update([0]);
    hasher.update(prost::Message::encode_to_vec(record));
    Mapped {
        entry: entry(
            event,
            component,
            trace,
            time,
            Parts {
                payload,
                attributes: &record.attributes,
                context,
            },
            cost,
        ),
        key: received_key(time, hasher.finalize().into()),
        provider: if claude {
            Some("anthropic".to_owned())
        } else {
            provider_of(&attributes)
        },
    }
}

/// Whether a log body reads as an event's name: one short word of dotted parts.
fn names(body: &str) -> bool {
    !body.is_empty()
        && body.len() <= MAX_EVENT_LEN
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'))
}

/// What goes into a payload besides the item's own fields.
struct Parts<'a> {
    payload: Map<String, Value>,
    attributes: &'a [KeyValue],
    context: &'a Context<'a>,
}

fn entry(
    event: &str,
    component: &str,
    trace: Option<String>,
    time: u64,
    parts: Parts<'_>,
    cost: Option<Cost>,
) -> Entry {
    let mut entry = Entry::new(
        clip(event, MAX_EVENT_LEN),
        clip(component, MAX_COMPONENT_LEN),
    );
    entry.trace_id = trace;
    entry.client_ts = (time > 0 && time <= MAX_INTEGER).then_some(time as i64);
    entry.payload = payload_text(parts);
    entry.cost = cost;
    entry
}

/// The payload's JSON within `MAX_PAYLOAD_LEN`: whole if it fits; else with every
/// attribute value longer than `LONG_VALUE` bytes cut to that many (and said so); else with
/// the attributes left out, their count said. The item's own fields always stay.
fn payload_text(parts: Parts<'_>) -> String {
    let Parts {
        payload,
        attributes,
        context,
    } = parts;
    let mut shared: Vec<(&str, &str)> = vec![("source", context.source)];
    if let Some(scope) = &context.scope {
        shared.push(("scope", scope));
    }
    for cut in [None, Some(LONG_VALUE)] {
        let attributes_text = object_cut(attributes, cut).to_string();
        let mut raw = shared.clone();
        raw.push(("attributes", &attributes_text));
        match cut {
            None => raw.push(("resource", &context.resource_text)),
            Some(_) => {
                raw.push(("resource", context.resource_cut()));
                raw.push(("truncated", "\"values\""));
            }
        }
        let text = write_object(&payload, raw);
        if text.len() <= MAX_PAYLOAD_LEN {
            return text;
        }
    }
    let dropped = attributes.len().to_string();
    let mut raw = shared;
    raw.push(("truncated", "\"attributes\""));
    raw.push(("attributes_dropped", &dropped));
    let text = write_object(&payload, raw);
    if text.len() <= MAX_PAYLOAD_LEN {
        return text;
    }
    // Only an item whose own name or body is enormous gets here.
    json!({"otlp": "item", "truncated": "all", "bytes": text.len()}).to_string()
}

/// A JSON object of `fields` and of `raw` fields whose values are JSON text already, with
/// the keys in the order a `serde_json::Map` writes them (sorted), so that the text is the
/// one the whole object as a `Value` would give, without building it. The keys of `raw` are
/// the mapping's own names, which need no escaping, and none is also in `fields`.
fn write_object(fields: &Map<String, Value>, mut raw: Vec<(&str, &str)>) -> String {
    raw.sort_unstable_by_key(|(key, _)| *key);
    let length = raw
        .iter()
        .map(|(key, text)| key.len() + text.len() + 4)
        .sum::<usize>();
    let mut out = Vec::with_capacity(length + 64 * fields.len() + 2);
    out.push(b'{');
    let mut fields = fields.iter().peekable();
    let mut raw = raw.into_iter().peekable();
    loop {
        let field_first = match (fields.peek(), raw.peek()) {
            (Some((key, _)), Some((raw_key, _))) => key.as_str() < *raw_key,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if out.len() > 1 {
            out.push(b',');
        }
        if field_first {
            let (key, value) = fields.next().expect("peeked");
            serde_json::to_writer(&mut out, key).expect("a string writes to memory");
            out.push(b':');
            serde_json::to_writer(&mut out, value).expect("a value writes to memory");
        } else {
            let (key, text) = raw.next().expect("peeked");
            out.push(b'"');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.push(b'}');
    String::from_utf8(out).expect("JSON text is UTF-8")
}

fn object(attributes: &[KeyValue]) -> Value {
    object_cut(attributes, None)
}

fn object_cut(attributes: &[KeyValue], cut: Option<usize>) -> Value {
    let mut object = Map::new();
    for attribute in attributes {
        let mut shown = attribute
            .value
            .as_ref()
            .map_or(Value::Null, |value_| value(value_, 0));
        if let (Some(cut), Value::String(text)) = (cut, &shown)
            && text.len() > cut
        {
            shown = json!(format!("{}… ({} bytes)", clip(text, cut), text.len()));
        }
        object.insert(attribute.key.clone(), shown);
    }
    Value::Object(object)
}

/// An attribute value as JSON: integers as numbers, bytes as base64, nesting past
/// `MAX_DEPTH` as a string.
fn value(any: &AnyValue, depth: usize) -> Value {
    use any_value::Value as V;
    if depth > MAX_DEPTH {
        return json!("(nested too deep)");
    }
    match &any.value {
        None => Value::Null,
        Some(V::StringValue(text)) => json!(text),
        Some(V::BoolValue(flag)) => json!(flag),
        Some(V::IntValue(number)) => json!(number),
        Some(V::DoubleValue(number)) => serde_json::Number::from_f64(*number)
            .map_or_else(|| json!(number.to_string()), Value::Number),
        Some(V::ArrayValue(array)) => Value::Array(
            array
                .values
                .iter()
                .map(|item| value(item, depth + 1))
                .collect(),
        ),
        Some(V::KvlistValue(list)) => {
            let mut object = Map::new();
            for pair in &list.values {
                object.insert(
                    pair.key.clone(),
                    pair.value
                        .as_ref()
                        .map_or(Value::Null, |item| value(item, depth + 1)),
                );
            }
            Value::Object(object)
        }
        Some(V::BytesValue(bytes)) => {
            use base64::Engine;
            json!(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        // An index into a profile's string table, which traces and logs do not have.
        Some(V::StringValueStrindex(index)) => json!({ "strindex": index }),
    }
}

/// The attributes of an item, looked up by name.
struct Attributes<'a>(&'a [KeyValue]);

impl<'a> Attributes<'a> {
    fn get(&self, key: &str) -> Option<&'a AnyValue> {
        self.0
            .iter()
            .find(|attribute| attribute.key == key)
            .and_then(|attribute| attribute.value.as_ref())
    }

    fn text(&self, key: &str) -> Option<&'a str> {
        match self.get(key)?.value.as_ref()? {
            any_value::Value::StringValue(text) => Some(text),
            _ => None,
        }
    }

    /// A count, written as an integer, a double or a string; none when negative or not a
    /// number.
    fn count(&self, key: &str) -> Option<u64> {
        match self.get(key)?.value.as_ref()? {
            any_value::Value::IntValue(number) => u64::try_from(*number).ok(),
            any_value::Value::DoubleValue(number) if number.is_finite() && *number >= 0.0 => {
                Some(number.round() as u64)
            }
            any_value::Value::StringValue(text) => {
                let text = text.trim();
                text.parse::<u64>().ok().or_else(|| {
                    text.parse::<f64>()
                        .ok()
                        .filter(|number| number.is_finite() && *number >= 0.0)
                        .map(|number| number.round() as u64)
                })
            }
            _ => None,
        }
        .map(|count| count.min(MAX_INTEGER))
    }

    /// The first of `keys` that is present, as a count.
    fn first_count(&self, keys: &[&str]) -> Option<u64> {
        keys.iter().find_map(|key| self.count(key))
    }

    /// Dollars, written as a double, an integer or a string.
    fn dollars(&self, key: &str) -> Option<f64> {
        let number = match self.get(key)?.value.as_ref()? {
            any_value::Value::DoubleValue(number) => *number,
            any_value::Value::IntValue(number) => *number as f64,
            any_value::Value::StringValue(text) => text.trim().parse().ok()?,
            _ => return None,
        };
        (number.is_finite() && number >= 0.0).then_some(number)
    }
}

fn micro_usd(dollars: f64) -> u64 {
    ((dollars * 1e6).round() as u64).min(MAX_INTEGER)
}

/// Model and tokens by the GenAI semantic conventions.
fn genai_cost(attributes: &Attributes<'_>) -> Option<Cost> {
    let model = attributes
        .text("gen_ai.response.model")
        .or_else(|| attributes.text("gen_ai.request.model"))
        .filter(|model| !model.is_empty());
    let tokens_in =
        attributes.first_count(&["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"]);
    let tokens_out = attributes.first_count(&[
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
    ]);
    let cache_read_tokens = attributes.first_count(&[
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
    ]);
    let cache_write_tokens = attributes.first_count(&[
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    ]);
    let reasoning_tokens = attributes.first_count(&[
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
    ]);
    if model.is_none() && tokens_in.is_none() && tokens_out.is_none() {
        return None;
    }
    Some(Cost {
        tokens_in: tokens_in.unwrap_or(0),
        tokens_out: tokens_out.unwrap_or(0),
        cache_read_tokens,
        cache_write_tokens,
        cache_write_1h_tokens: None,
        reasoning_tokens,
        micro_usd: attributes.dollars("gen_ai.usage.cost").map(micro_usd),
        model: model.map(|model| clip(model, MAX_MODEL_LEN).to_owned()),
        priced_by: None,
    })
}

/// Model, tokens and dollars of a Claude Code event, whose `input_tokens` leaves out the
/// cache reads and writes that witness counts in.
fn claude_cost(attributes: &Attributes<'_>) -> Option<Cost> {
    let model = attributes.text("model").filter(|model| !model.is_empty());
    let input = attributes.count("input_tokens");
    let output = attributes.count("output_tokens");
    let cache_read = attributes.count("cache_read_tokens");
    let cache_write = attributes.count("cache_creation_tokens");
    let dollars = attributes.dollars("cost_usd");
    if model.is_none() && input.is_none() && output.is_none() && dollars.is_none() {
        return None;
    }
    let tokens_in = input
        .unwrap_or(0)
        .saturating_add(cache_read.unwrap_or(0))
        .saturating_add(cache_write.unwrap_or(0))
        .min(MAX_INTEGER);
    Some(Cost {
        tokens_in,
        tokens_out: output.unwrap_or(0),
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        cache_write_1h_tokens: None,
        reasoning_tokens: None,
        micro_usd: dollars.map(micro_usd),
        model: model.map(|model| clip(model, MAX_MODEL_LEN).to_owned()),
        priced_by: None,
    })
}

fn component_of(resource: &Resource) -> String {
    Attributes(&resource.attributes)
        .text("service.name")
        .filter(|name| !name.is_empty())
        .unwrap_or(UNKNOWN_SERVICE)
        .to_owned()
}

/// The OTel trace id in hex; none when absent or all zeros (invalid by the spec).
fn trace_of(trace_id: &[u8]) -> Option<String> {
    (!trace_id.is_empty() && trace_id.iter().any(|&byte| byte != 0)).then(|| hex::encode(trace_id))
}

/// `text` cut to at most `max` bytes on a character boundary.
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;

    fn attribute(key: &str, value: V) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn source() -> Source {
        Source {
            listener: "otlp",
            peer: "127.0.0.1:1".into(),
            token: None,
        }
    }

    #[test]
    fn claude_code_input_tokens_gain_the_cached_ones_and_dollars_become_micro_usd() {
        let record = LogRecord {
            time_unix_nano: 5,
            body: Some(AnyValue {
                value: Some(V::StringValue("claude_code.api_request".into())),
            }),
            attributes: vec![
                attribute("event.name", V::StringValue("api_request".into())),
                attribute("model", V::StringValue("claude-sonnet-4-5".into())),
                attribute("input_tokens", V::StringValue("10".into())),
                attribute("output_tokens", V::IntValue(20)),
                attribute("cache_read_tokens", V::DoubleValue(300.0)),
                attribute("cache_creation_tokens", V::IntValue(4)),
                attribute("cost_usd", V::DoubleValue(0.0123456)),
                attribute("session.id", V::StringValue("s-1".into())),
            ],
            ..LogRecord::default()
        };
        let source = source().text();
        let resource = Resource::default();
        let context = Context::new(&resource, None, &source);
        let mapped = log_entry(&record, "claude-code", &context);
        let entry = mapped.entry;
        assert_eq!(entry.event, "claude_code.api_request");
        assert_eq!(entry.trace_id.as_deref(), Some("s-1"));
        let cost = entry.cost.unwrap();
        assert_eq!(cost.tokens_in, 314);
        assert_eq!(cost.tokens_out, 20);
        assert_eq!(cost.cache_read_tokens, Some(300));
        assert_eq!(cost.micro_usd, Some(12_346));
        assert_eq!(cost.model.as_deref(), Some("claude-sonnet-4-5"));
    }

    #[test]
    fn a_payload_over_the_limit_cuts_long_values_then_drops_attributes() {
        let huge = "x".repeat(MAX_PAYLOAD_LEN);
        let span = Span {
            name: "big".into(),
            attributes: vec![attribute("prompt", V::StringValue(huge))],
            ..Span::default()
        };
        let source = source().text();
        let resource = Resource::default();
        let context = Context::new(&resource, None, &source);
        let mapped = span_entry(&span, "c", &context);
        assert!(mapped.entry.payload.len() <= MAX_PAYLOAD_LEN);
        let payload: Value = serde_json::from_str(&mapped.entry.payload).unwrap();
        assert_eq!(payload["truncated"], "values");
        assert!(
            payload["attributes"]["prompt"]
                .as_str()
                .unwrap()
                .ends_with("bytes)")
        );
        let many: Vec<KeyValue> = (0..200)
            .map(|i| attribute(&format!("k{i}"), V::StringValue("y".repeat(1000))))
            .collect();
        let span = Span {
            name: "many".into(),
            attributes: many,
            ..Span::default()
        };
        let mapped = span_entry(&span, "c", &context);
        let payload: Value = serde_json::from_str(&mapped.entry.payload).unwrap();
        assert_eq!(payload["truncated"], "attributes");
        assert_eq!(payload["attributes_dropped"], 200);
        assert_eq!(payload["name"], "many");
    }

    /// The payload written field by field is the text the whole object as a `Value` gives,
    /// as it was built before the shared parts were written once a request.
    #[test]
    fn a_payload_is_the_text_of_its_whole_object() {
        use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
        use opentelemetry_proto::tonic::trace::v1::{Status, span::Event};
        let resource = Resource {
            attributes: vec![
                attribute("service.name", V::StringValue("agent \"one\"".into())),
                attribute("host.name", V::StringValue("h\u{e9}".into())),
                attribute("process.pid", V::IntValue(42)),
            ],
            ..Resource::default()
        };
        let scope = InstrumentationScope {
            name: "opentelemetry.instrumentation.openai_v2".into(),
            version: "2.4b0".into(),
            ..InstrumentationScope::default()
        };
        let span = Span {
            trace_id: vec![7; 16],
            span_id: vec![8; 8],
            parent_span_id: vec![9; 8],
            name: "chat gpt-4o-mini".into(),
            kind: 3,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 5_000,
            attributes: vec![
                attribute("gen_ai.request.model", V::StringValue("gpt-4o-mini".into())),
                attribute("zeta", V::BoolValue(true)),
                attribute("alpha", V::DoubleValue(0.5)),
            ],
            events: vec![Event {
                name: "gen_ai.choice".into(),
                time_unix_nano: 4_000,
                attributes: vec![attribute("index", V::IntValue(0))],
                ..Event::default()
            }],
            status: Some(Status {
                code: 2,
                message: "boom </script>".into(),
            }),
            ..Span::default()
        };
        let source_of = Source {
            listener: "otlp",
            peer: "127.0.0.1:5".into(),
            token: Some("ci".into()),
        };
        let source = source_of.text();
        let context = Context::new(&resource, Some(&scope), &source);
        let mapped = span_entry(&span, "agent", &context);
        let mut whole: Map<String, Value> = serde_json::from_str(&mapped.entry.payload).unwrap();
        assert_eq!(whole["source"]["token"], "ci");
        assert_eq!(whole["scope"]["version"], "2.4b0");
        assert_eq!(whole["resource"]["process.pid"], 42);
        assert_eq!(whole["status"]["code"], "STATUS_CODE_ERROR");
        assert_eq!(whole["events"][0]["attributes"]["index"], 0);
        // Parsed and written again as one `Value`, the text is the same, byte for byte.
        assert_eq!(
            Value::Object(std::mem::take(&mut whole)).to_string(),
            mapped.entry.payload
        );
    }

    #[test]
    fn deep_nesting_is_cut_and_texts_are_clipped_on_character_boundaries() {
        let mut nested = AnyValue {
            value: Some(V::StringValue("leaf".into())),
        };
        for _ in 0..100 {
            nested = AnyValue {
                value: Some(V::ArrayValue(
                    opentelemetry_proto::tonic::common::v1::ArrayValue {
                        values: vec![nested],
                    },
                )),
            };
        }
        assert!(value(&nested, 0).to_string().contains("nested too deep"));
        assert_eq!(clip("ééé", 3), "é");
        assert_eq!(trace_of(&[0; 16]), None);
    }
}
