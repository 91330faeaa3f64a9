//! Monitor topics: which feed entries a monitor sees.
//!
//! ```text
//! monTopic  := pattern (',' pattern)*
//! pattern   := qual* body opfilter?
//! qual      := '[' ('operation' '=' ops | 'group' '=' glob) ']'
//! opfilter  := '[' ops ']'            ops := op (',' op)*   op := 'C' | 'U' | 'D'
//! body      := agentsel '/channels/' seg ('/messages' | '/aggregate')?
//!            | agentsel '/' ('invocations' | 'notifications' | 'connection')
//!            | agentsel                               -- everything on those agents
//!            | Type ('/' seg)*                        -- by type (below)
//! agentsel  := agent id (decimal) | '*'              seg := name | '*'
//! ```
//!
//! `*` matches exactly one segment, and a body matches every entry whose
//! path starts with it: `*` alone is everything of the organisation. A
//! `Type` is one of Paddock's (`Message`, `Aggregate`, `Notification`,
//! `Connection`, `Invocation`, `Agent`) or a Device Cloud alias
//! (`DataPoint` = messages, `DataStream` = aggregates, `DeviceCore` =
//! agents and connection changes, `AlarmStatus` / `alert_status` =
//! notifications); after it come the agent and, for messages and
//! aggregates, the channel. Operations: `C` a message or notification
//! created (or an agent), `U` an aggregate, connection or agent updated,
//! `D` an agent deleted. Commas inside brackets belong to the bracket.

use crate::store::{FeedEntry, FeedKind, FeedOp};

/// Why a topic was refused (the API answers 400 with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic {pattern:?}: {reason}")]
pub struct TopicError {
    /// The pattern at fault.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed `monTopic`: an entry matches if any pattern does.
#[derive(Debug, Clone, PartialEq)]
pub struct Topics(Vec<Pattern>);

#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    /// Operations allowed (empty: all).
    ops: Vec<FeedOp>,
    /// Group glob (`*` inside a segment allowed).
    group: Option<String>,
    body: Body,
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    /// Agent-first: a prefix of `[agent, "channels", name, "messages"]` etc.
    Path(Vec<Seg>),
    /// Type-first: kinds, then a prefix of `[agent, channel]`.
    Typed(Vec<FeedKind>, Vec<Seg>),
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Any,
    Is(String),
}

/// Most patterns in one topic string, and longest topic string: a monitor
/// is matched against every entry of its organisation.
const MAX_PATTERNS: usize = 32;
const MAX_TOPIC_LEN: usize = 4096;

impl Topics {
    /// Parse a `monTopic` string.
    pub fn parse(s: &str) -> Result<Topics, TopicError> {
        let fault = |pattern: &str, reason: &str| TopicError { pattern: pattern.into(), reason: reason.into() };
        if s.len() > MAX_TOPIC_LEN {
            return Err(fault(&s[..s.floor_char_boundary(40)], "the topic string is longer than 4096 bytes"));
        }
        let patterns: Vec<&str> = split_top_level(s);
        if patterns.len() > MAX_PATTERNS {
            return Err(fault(s, "more than 32 patterns"));
        }
        let parsed = patterns.into_iter().map(|p| parse_pattern(p.trim()).map_err(|r| fault(p.trim(), &r)));
        Ok(Topics(parsed.collect::<Result<_, _>>()?))
    }

    /// Whether `entry` matches.
    pub fn matches(&self, entry: &FeedEntry) -> bool {
        self.0.iter().any(|p| p.matches(entry))
    }
}

/// Split on commas outside brackets.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0u32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_pattern(p: &str) -> Result<Pattern, String> {
    if p.is_empty() {
        return Err("an empty pattern".into());
    }
    let (mut ops, mut group, mut rest) = (Vec::new(), None, p);
    while let Some(inner) = rest.strip_prefix('[') {
        let end = inner.find(']').ok_or("an unclosed '['")?;
        let (qual, after) = (&inner[..end], &inner[end + 1..]);
        match qual.split_once('=') {
            Some(("operation", list)) => ops = parse_ops(list)?,
            Some(("group", glob)) if !glob.is_empty() => group = Some(glob.to_owned()),
            _ => return Err(format!("unknown qualifier [{qual}] (operation= or group=)")),
        }
        rest = after;
    }
    if let Some(open) = rest.find('[') {
        let list = rest[open + 1..].strip_suffix(']').ok_or("an operation filter must end the pattern")?;
        ops = parse_ops(list)?;
        rest = &rest[..open];
    }
    Ok(Pattern { ops, group, body: parse_body(rest)? })
}

fn parse_ops(list: &str) -> Result<Vec<FeedOp>, String> {
    list.split(',')
        .map(|op| match op.trim() {
            "C" => Ok(FeedOp::Create),
            "U" => Ok(FeedOp::Update),
            "D" => Ok(FeedOp::Delete),
            other => Err(format!("unknown operation {other:?} (C, U or D)")),
        })
        .collect()
}

fn seg(s: &str) -> Result<Seg, String> {
    match s {
        "" => Err("an empty segment".into()),
        "*" => Ok(Seg::Any),
        s => Ok(Seg::Is(s.to_owned())),
    }
}

fn parse_body(body: &str) -> Result<Body, String> {
    let parts: Vec<&str> = body.split('/').collect();
    let first = parts[0];
    if let Some(kinds) = kinds_of(first) {
        let rest = parts[1..].iter().map(|s| seg(s)).collect::<Result<Vec<_>, _>>()?;
        let room = if kinds.iter().any(|k| matches!(k, FeedKind::Message | FeedKind::Aggregate)) { 2 } else { 1 };
        if rest.len() > room {
            return Err(format!("{first} takes at most {room} segment(s) after it"));
        }
        return Ok(Body::Typed(kinds, rest));
    }
    if first != "*" && first.parse::<u64>().is_err() {
        return Err(format!("{first:?} is neither an agent id, '*' nor a known type"));
    }
    let segs = parts.iter().map(|s| seg(s)).collect::<Result<Vec<_>, _>>()?;
    let shape_ok = match parts.get(1) {
        None => true,
        Some(&"channels") => parts.len() <= 3 || (parts.len() == 4 && matches!(parts[3], "messages" | "aggregate")),
        Some(&("invocations" | "notifications" | "connection")) => parts.len() == 2,
        Some(other) => return Err(format!("unknown path segment {other:?}")),
    };
    if !shape_ok {
        return Err("after channels/<name> only /messages or /aggregate may follow".into());
    }
    Ok(Body::Path(segs))
}

/// The kinds a type name (Paddock's or a Device Cloud alias) stands for.
fn kinds_of(name: &str) -> Option<Vec<FeedKind>> {
    Some(match name {
        "Message" | "DataPoint" => vec![FeedKind::Message],
        "Aggregate" | "DataStream" => vec![FeedKind::Aggregate],
        "Notification" | "AlarmStatus" | "alert_status" => vec![FeedKind::Notification],
        "Connection" => vec![FeedKind::Connection],
        "Invocation" => vec![FeedKind::Invocation],
        "Agent" => vec![FeedKind::Agent],
        "DeviceCore" => vec![FeedKind::Agent, FeedKind::Connection],
        _ => return None,
    })
}

impl Pattern {
    fn matches(&self, e: &FeedEntry) -> bool {
        if !self.ops.is_empty() && !self.ops.contains(&e.op) {
            return false;
        }
        if let Some(glob) = &self.group
            && !e.group.as_deref().is_some_and(|g| glob_match(glob, g))
        {
            return false;
        }
        let agent = e.agent.to_string();
        match &self.body {
            Body::Typed(kinds, segs) => {
                let mut path = vec![agent.as_str()];
                path.extend(e.channel.as_deref().filter(|_| matches!(e.kind, FeedKind::Message | FeedKind::Aggregate)));
                kinds.contains(&e.kind) && prefix(segs, &path)
            }
            Body::Path(segs) => {
                let channel = e.channel.as_deref().unwrap_or_default();
                let path: Vec<&str> = match e.kind {
                    FeedKind::Message => vec![&agent, "channels", channel, "messages"],
                    FeedKind::Aggregate => vec![&agent, "channels", channel, "aggregate"],
                    FeedKind::Notification => vec![&agent, "notifications"],
                    FeedKind::Connection => vec![&agent, "connection"],
                    FeedKind::Invocation => vec![&agent, "invocations"],
                    FeedKind::Agent => vec![&agent],
                };
                prefix(segs, &path)
            }
        }
    }
}

/// Whether `segs` match the start of `path`.
fn prefix(segs: &[Seg], path: &[&str]) -> bool {
    segs.len() <= path.len()
        && segs.iter().zip(path).all(|(s, p)| match s {
            Seg::Any => true,
            Seg::Is(name) => name == p,
        })
}

/// `*` matches any run of characters (group names are paths like
/// `farm/north`).
fn glob_match(glob: &str, s: &str) -> bool {
    match glob.split_once('*') {
        None => glob == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else { return false };
            (0..=rest.len()).filter(|i| rest.is_char_boundary(*i)).any(|i| glob_match(tail, &rest[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentId, OrgId};

    fn entry(kind: FeedKind, op: FeedOp, agent: u64, channel: Option<&str>, group: Option<&str>) -> FeedEntry {
        FeedEntry {
            seq: 1,
            org: OrgId::from(9),
            kind,
            op,
            agent: AgentId::from(agent),
            channel: channel.map(str::to_owned),
            group: group.map(str::to_owned),
            at_ms: 0,
            id: "1".into(),
            body: serde_json::Value::Null,
        }
    }

    fn msg(agent: u64, channel: &str) -> FeedEntry {
        entry(FeedKind::Message, FeedOp::Create, agent, Some(channel), None)
    }

    fn agg(agent: u64, channel: &str) -> FeedEntry {
        entry(FeedKind::Aggregate, FeedOp::Update, agent, Some(channel), None)
    }

    fn t(s: &str) -> Topics {
        Topics::parse(s).unwrap()
    }

    #[test]
    fn agent_first_paths_match_by_prefix_with_one_segment_wildcards() {
        assert!(t("*").matches(&msg(7, "x")) && t("*").matches(&agg(7, "x")));
        assert!(t("7").matches(&msg(7, "x")) && !t("7").matches(&msg(8, "x")));
        assert!(t("*/channels/tank").matches(&msg(3, "tank")) && t("*/channels/tank").matches(&agg(3, "tank")));
        assert!(t("*/channels/tank/messages").matches(&msg(3, "tank")));
        assert!(!t("*/channels/tank/messages").matches(&agg(3, "tank")));
        assert!(!t("*/channels/tank").matches(&msg(3, "tanks")));
        let note = entry(FeedKind::Notification, FeedOp::Create, 3, Some("notifications"), None);
        assert!(t("3/notifications").matches(&note) && !t("3/connection").matches(&note));
    }

    #[test]
    fn types_and_device_cloud_aliases_select_kinds_then_agent_and_channel() {
        assert!(t("DataPoint").matches(&msg(1, "a")) && !t("DataPoint").matches(&agg(1, "a")));
        assert!(t("DataStream/1/a").matches(&agg(1, "a")) && !t("DataStream/1/b").matches(&agg(1, "a")));
        assert!(t("Message/*/a").matches(&msg(5, "a")));
        let conn = entry(FeedKind::Connection, FeedOp::Update, 4, Some("doover_connection"), None);
        assert!(
            t("DeviceCore").matches(&conn) && t("DeviceCore/4").matches(&conn) && !t("DeviceCore/5").matches(&conn)
        );
        assert!(!t("DataPoint,DataStream").matches(&conn));
        assert!(t("DataPoint,DataStream").matches(&agg(1, "a")));
    }

    #[test]
    fn operation_and_group_filters_narrow_a_pattern() {
        assert!(t("DataStream[U]").matches(&agg(1, "a")) && !t("DataPoint[U]").matches(&msg(1, "a")));
        assert!(t("[operation=C,U]*").matches(&msg(1, "a")));
        assert!(!t("[operation=D]*").matches(&msg(1, "a")));
        let grouped = entry(FeedKind::Message, FeedOp::Create, 1, Some("a"), Some("farm/north"));
        assert!(t("[group=farm/*]DataPoint").matches(&grouped));
        assert!(!t("[group=farm/south]DataPoint").matches(&grouped));
        assert!(!t("[group=farm/*]DataPoint").matches(&msg(1, "a")), "no group never matches a group filter");
        // Commas inside brackets do not split patterns.
        assert_eq!(t("DataPoint,1/channels/x[C,U]").0.len(), 2);
    }

    #[test]
    fn a_bad_topic_names_its_fault() {
        for (bad, says) in [
            ("", "empty pattern"),
            ("FileData", "neither an agent id"),
            ("tank/*/channels/x[C,U]", "neither an agent id"),
            ("1/channels/x/y", "only /messages or /aggregate"),
            ("1/foo", "unknown path segment"),
            ("DataPoint[X]", "unknown operation"),
            ("[colour=red]*", "unknown qualifier"),
            ("DataPoint[C", "must end the pattern"),
            ("1//x", "empty segment"),
            ("DataPoint/1/a/b", "at most 2"),
        ] {
            let e = Topics::parse(bad).unwrap_err();
            assert!(e.reason.contains(says), "{bad:?}: {e}");
        }
        assert!(Topics::parse(&"DataPoint,".repeat(40)).unwrap_err().reason.contains("more than 32"));
    }
}
