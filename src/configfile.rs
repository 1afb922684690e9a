//! `--config FILE`: one leaderd sidecar, several single leases and shard groups, each with its
//! own timing, in one YAML file, parsed and validated before anything starts.
//!
//! ```yaml
//! identity: my-pod            # optional; default: --identity / POD_NAME / hostname
//! leases:                     # single leases (the /leader contract), optional
//!   - name: billing-cron      # required; a DNS-1123 subdomain
//!     leaseDuration: 15s      # optional (humantime); defaults 15s / 10s / 2s like the flags
//!     renewDeadline: 10s
//!     retryPeriod: 2s
//! groups:                     # shard groups, optional
//!   - name: partitions        # required; a DNS-1123 label (it is also a label value)
//!     shards: 64              # required, 1..=4096
//!     leaseDuration: 15s
//!     renewDeadline: 10s
//!     retryPeriod: 2s
//! ```
//!
//! At least one lease or group is required, and names are unique across leases and groups. A
//! group `g` also uses the Leases `g-shards` (its assignment) and `g-m-<hash>` (its members), so
//! no other entry may be named like those either.
//!
//! Every problem is a [`FileError`], one line `FILE:LINE: what is wrong; fix: how to fix it`.
//!
//! # Line numbers
//!
//! serde_yaml 0.9 gives no positions of parsed values (no spans), only of errors. Errors of the
//! YAML itself (syntax, unknown keys, wrong types, bad durations: durations are parsed while
//! deserializing) carry serde_yaml's position. For the checks made after parsing, the line of
//! each list entry is found by parsing the text again once per entry, with a deserializer that
//! stops with an error at that entry, whose position is the entry's (the line of its first key,
//! `- name: ...` as usually written). That costs one parse per entry, negligible for files of a
//! few hundred entries, and unlike scanning the text it is right whatever the YAML style (flow
//! mappings, comments, any indentation).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::config::checks::{is_dns_subdomain, ConfigError, TimingArgs};
use crate::shards::record::{GROUP_LABEL, MAX_SHARDS};

/// The default `leaseDuration`, as `--lease-duration`.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// The default `renewDeadline`, as `--renew-deadline`.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// The default `retryPeriod`, as `--retry-period`.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The most characters of a group name (a DNS-1123 label, and a label value).
pub const MAX_GROUP_NAME: usize = 63;

/// Where to read about the format, in fixes.
const SEE: &str = "see README \"Config file\"";

/// A parsed and validated config file.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// `identity`, when given (never empty); else the `--identity` flag, `POD_NAME` or the
    /// hostname apply.
    pub identity: Option<String>,
    /// The leases and groups, in the order they appear in the file; never empty, names unique.
    pub entries: Vec<Entry>,
}

/// One single lease (`shards` is `None`) or shard group (`shards` is `Some`).
#[derive(Clone, Debug)]
pub struct Entry {
    /// The Lease's name (a DNS-1123 subdomain), or the group's (a DNS-1123 label).
    pub name: String,
    /// The group's number of shards, `1..=4096`; `None` for a single lease.
    pub shards: Option<u32>,
    /// Its timing, validated (D > R > P > 0, D >= 1s), defaults filled in.
    pub timing: TimingArgs,
    /// The line of the entry in the file (1-based; that of its first key), for messages.
    pub line: usize,
}

impl Entry {
    /// "lease" or "group".
    pub fn kind(&self) -> &'static str {
        if self.shards.is_some() {
            "group"
        } else {
            "lease"
        }
    }
}

/// A problem with the config file: its [`Display`](fmt::Display) is one line,
/// `FILE:LINE: what is wrong; fix: how to fix it` (`FILE: ...` when no line applies).
///
/// None of the variants is retryable: they are configuration errors, and the caller exits 64
/// ([`crate::config::EXIT_USAGE`]) before anything starts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The file could not be read (missing, not readable, not UTF-8).
    #[error("{file}: the config file could not be read: {reason}; fix: check the path given to --config, that the file (e.g. the ConfigMap) is mounted there and readable by leaderd, and that it is UTF-8 text")]
    Unreadable {
        /// The file, as given.
        file: String,
        /// Why, from the operating system.
        reason: String,
    },
    /// The YAML does not parse into the format: syntax, an unknown or repeated key, a value of
    /// the wrong type, a bad duration, a missing `name` or `shards`.
    #[error("{}: {problem}; fix: {fix}", at(.file, .line))]
    Syntax {
        /// The file, as given.
        file: String,
        /// The line, when serde_yaml knows it.
        line: Option<usize>,
        /// What is wrong (with serde_yaml's path to the value, such as `groups[0].shards`).
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// A value that parses but is not allowed: a bad name, shards out of range, a broken
    /// timing rule, a name used twice or taken by a group's Leases, an empty identity.
    #[error("{}: {problem}; fix: {fix}", at(.file, .line))]
    Invalid {
        /// The file, as given.
        file: String,
        /// The line of the entry (or of `identity`).
        line: Option<usize>,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// Neither a lease nor a group.
    #[error(
        "{file}: names no lease and no group; fix: add a \"leases:\" or \"groups:\" list ({SEE})"
    )]
    Empty {
        /// The file, as given.
        file: String,
    },
}

impl FileError {
    /// The line the problem is at, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            FileError::Syntax { line, .. } | FileError::Invalid { line, .. } => *line,
            FileError::Unreadable { .. } | FileError::Empty { .. } => None,
        }
    }
}

/// `FILE:LINE` or `FILE`.
fn at(file: &str, line: &Option<usize>) -> String {
    match line {
        Some(l) => format!("{file}:{l}"),
        None => file.to_owned(),
    }
}

/// Read and parse the file at `path` (see [`parse`]).
pub fn load(path: &Path) -> Result<FileConfig, FileError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&file, &text),
        Err(e) => Err(FileError::Unreadable {
            file,
            reason: e.to_string(),
        }),
    }
}

/// Parse and validate the text of a config file; `path_for_messages` starts every message.
pub fn parse(path_for_messages: &str, text: &str) -> Result<FileConfig, FileError> {
    let file = path_for_messages;
    let raw: RawFile = serde_yaml::from_str(text).map_err(|e| syntax(file, &e))?;
    let invalid = |line: usize, problem: String, fix: String| FileError::Invalid {
        file: file.to_owned(),
        line: (line > 0).then_some(line),
        problem,
        fix,
    };

    if let Some(id) = &raw.identity {
        if id.trim().is_empty() {
            return Err(invalid(
                locate(text, Spot::Identity),
                format!("identity {id:?} is empty"),
                "give this candidate's name, or remove the key to use --identity, POD_NAME or the hostname".to_owned(),
            ));
        }
    }

    let mut entries = Vec::new();
    for (i, l) in raw.leases.unwrap_or_default().into_iter().enumerate() {
        let timing = l.timing_parts().args();
        entries.push(Entry {
            name: l.name,
            shards: None,
            timing,
            line: locate(text, Spot::Entry(List::Leases, i)),
        });
    }
    for (i, g) in raw.groups.unwrap_or_default().into_iter().enumerate() {
        let timing = g.timing_parts().args();
        entries.push(Entry {
            name: g.name,
            shards: Some(g.shards),
            timing,
            line: locate(text, Spot::Entry(List::Groups, i)),
        });
    }
    if entries.is_empty() {
        return Err(FileError::Empty {
            file: file.to_owned(),
        });
    }
    entries.sort_by_key(|e| e.line);

    for e in &entries {
        check_entry(e).map_err(|(problem, fix)| invalid(e.line, problem, fix))?;
    }

    let mut seen: HashMap<&str, &Entry> = HashMap::new();
    for e in &entries {
        if let Some(first) = seen.insert(&e.name, e) {
            return Err(invalid(
                e.line,
                format!(
                    "name {:?} is used twice, by the {} at line {} and the {} at line {}",
                    e.name,
                    first.kind(),
                    first.line,
                    e.kind(),
                    e.line
                ),
                "rename one of them: every lease and group is a Lease of its name in the namespace, so names are unique across leases and groups".to_owned(),
            ));
        }
    }

    for g in entries.iter().filter(|g| g.shards.is_some()) {
        let assignment = format!("{}-shards", g.name);
        let members = format!("{}-m-", g.name);
        for e in entries.iter().filter(|e| e.name != g.name) {
            let what = if e.name == assignment {
                format!("its assignment in the Lease {assignment:?}")
            } else if e.name.starts_with(&members) {
                format!("its members' records in the Leases \"{members}<hash>\"")
            } else {
                continue;
            };
            return Err(invalid(
                e.line,
                format!(
                    "{} name {:?} is taken by the group {:?} at line {}, which keeps {what} (a group g also uses the Leases \"g-shards\" and \"g-m-<hash>\")",
                    e.kind(),
                    e.name,
                    g.name,
                    g.line,
                ),
                format!("rename the {} {:?} or the group {:?}", e.kind(), e.name, g.name),
            ));
        }
    }

    Ok(FileConfig {
        identity: raw.identity,
        entries,
    })
}

/// The checks of one entry alone: name, shards, timing. `Err((problem, fix))`.
fn check_entry(e: &Entry) -> Result<(), (String, String)> {
    let kind = e.kind();
    match e.shards {
        None => {
            if !is_dns_subdomain(&e.name) {
                return Err((
                    format!("lease name {:?} is not a valid DNS-1123 subdomain", e.name),
                    "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters".to_owned(),
                ));
            }
        }
        Some(shards) => {
            if !is_label_chars(&e.name) {
                return Err((
                    format!(
                        "group name {:?} is not a valid DNS-1123 label (the name is also the value of the label {GROUP_LABEL})",
                        e.name
                    ),
                    format!("use lowercase letters, digits and '-' (no '.'), starting and ending with a letter or digit, at most {MAX_GROUP_NAME} characters"),
                ));
            }
            if e.name.len() > MAX_GROUP_NAME {
                return Err((
                    format!(
                        "group name {:?} is {} characters long, more than the {MAX_GROUP_NAME} of a DNS-1123 label (the name is also the value of the label {GROUP_LABEL})",
                        e.name,
                        e.name.len()
                    ),
                    format!("shorten it to at most {MAX_GROUP_NAME} characters"),
                ));
            }
            if shards == 0 || shards > MAX_SHARDS {
                return Err((
                    format!("group {:?}: shards {shards} is out of range", e.name),
                    format!("give 1 to {MAX_SHARDS} shards (the assignment must fit in one Lease annotation)"),
                ));
            }
        }
    }
    e.timing.validate().map_err(|err| {
        let message = match err {
            ConfigError::Timing(m) => m,
            other => other.to_string(),
        };
        let message = message
            .replace("--lease-duration", "leaseDuration")
            .replace("--renew-deadline", "renewDeadline")
            .replace("--retry-period", "retryPeriod");
        // The messages are "<problem>: <fix>".
        let (problem, fix) = message
            .split_once(": ")
            .unwrap_or((&message, "see the timing rules in docs/operations.md"));
        (format!("{kind} {:?}: {problem}", e.name), fix.to_owned())
    })
}

/// A DNS-1123 label but for its length: lowercase letters, digits and '-', starting and ending
/// with a letter or digit.
fn is_label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

// ---------------------------------------------------------------------------------------------
// The YAML, as serde sees it.

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with the keys identity, leases and groups"
)]
struct RawFile {
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    leases: Option<Vec<RawLease>>,
    #[serde(default)]
    groups: Option<Vec<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a lease: a mapping with the keys name, leaseDuration, renewDeadline and retryPeriod"
)]
struct RawLease {
    name: String,
    #[serde(default, deserialize_with = "duration")]
    lease_duration: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    renew_deadline: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    retry_period: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a group: a mapping with the keys name, shards, leaseDuration, renewDeadline and retryPeriod"
)]
struct RawGroup {
    name: String,
    shards: u32,
    #[serde(default, deserialize_with = "duration")]
    lease_duration: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    renew_deadline: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    retry_period: Option<Duration>,
}

/// The three timing keys of an entry, as given.
struct RawTiming {
    lease_duration: Option<Duration>,
    renew_deadline: Option<Duration>,
    retry_period: Option<Duration>,
}

impl RawTiming {
    fn args(&self) -> TimingArgs {
        TimingArgs {
            lease_duration: self.lease_duration.unwrap_or(DEFAULT_LEASE_DURATION),
            renew_deadline: self.renew_deadline.unwrap_or(DEFAULT_RENEW_DEADLINE),
            retry_period: self.retry_period.unwrap_or(DEFAULT_RETRY_PERIOD),
        }
    }
}

impl RawLease {
    fn timing_parts(&self) -> RawTiming {
        RawTiming {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
    }
}

impl RawGroup {
    fn timing_parts(&self) -> RawTiming {
        RawTiming {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
    }
}

/// Separates serde_yaml's message from our fix, in messages of our own deserializers (a NUL
/// cannot be in YAML text, so it cannot come from the file).
const FIX: char = '\0';

/// A humantime duration, parsed while deserializing so that a bad one has its position.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as 15s, 1m30s or 500ms")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v).map_err(|e| {
                E::custom(format!(
                    "{v:?} is not a duration ({e}){FIX}write a number and a unit, e.g. 15s, 1m30s or 500ms"
                ))
            })
        }
    }
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as 15s, 1m30s or 500ms")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(Text).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// A serde_yaml error as [`FileError::Syntax`], with its line, without its "at line L column C",
/// and with a fix.
fn syntax(file: &str, err: &serde_yaml::Error) -> FileError {
    let location = err.location();
    let mut message = err.to_string();
    if let Some(l) = &location {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(i) = message.find(&suffix) {
            message.replace_range(i..i + suffix.len(), "");
        }
    }
    let (problem, fix) = match message.split_once(FIX) {
        Some((p, f)) => (p.to_owned(), f.to_owned()),
        None => {
            let fix = fix_for(&message);
            (message, fix)
        }
    };
    FileError::Syntax {
        file: file.to_owned(),
        line: location.map(|l| l.line()),
        problem: one_line(&problem),
        fix,
    }
}

/// The fix for one of serde's or libyaml's messages.
fn fix_for(message: &str) -> String {
    if message.contains("unknown field") {
        if message.starts_with("leases[") && message.contains("unknown field `shards`") {
            return "a single lease has no shards: move the entry under \"groups:\" to make it a shard group, or remove the key".to_owned();
        }
        return format!("use one of the keys listed (they are case-sensitive, camelCase; {SEE})");
    }
    if message.contains("missing field `name`") {
        return "add \"name: ...\" to the entry".to_owned();
    }
    if message.contains("missing field `shards`") {
        return format!("add \"shards: N\" (1 to {MAX_SHARDS}) to the group, or move the entry under \"leases:\" for a single lease");
    }
    if message.contains("duplicate field") {
        return "give each key once per entry (and \"leases:\", \"groups:\" once per file)"
            .to_owned();
    }
    if message.contains("expected a sequence") {
        return "make it a list, one entry per item: \"- name: ...\"".to_owned();
    }
    if message.contains("expected u32") {
        return format!("give a whole number of shards, 1 to {MAX_SHARDS}");
    }
    if message.contains("invalid type") || message.contains("invalid value") {
        return format!("give a value of the type expected ({SEE})");
    }
    format!("correct the YAML there: indent with spaces, not tabs; put ':' after each key and '-' before each list item ({SEE})")
}

/// Control characters (newlines in a key, say) escaped, so that the message stays one line.
fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Lines of entries: parse again, stopping with an error at the entry; the error has its position.

#[derive(Clone, Copy, PartialEq, Eq)]
enum List {
    Leases,
    Groups,
}

#[derive(Clone, Copy)]
enum Spot {
    /// The value of `identity`.
    Identity,
    /// The entry at this index of this list.
    Entry(List, usize),
}

/// The message of the deliberate error.
const FOUND: &str = "leaderd: found";

/// The line of `spot` in `text`, which parsed; 0 if not found (not expected).
fn locate(text: &str, spot: Spot) -> usize {
    match Top(spot).deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map_or(0, |l| l.line()),
        _ => 0,
    }
}

/// Walks the top mapping to the spot.
struct Top(Spot);

impl<'de> DeserializeSeed<'de> for Top {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the config file's mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match (key.as_str(), self.0) {
                ("identity", Spot::Identity) => map.next_value_seed(Stop)?,
                ("leases", Spot::Entry(List::Leases, i))
                | ("groups", Spot::Entry(List::Groups, i)) => map.next_value_seed(Nth(i))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Walks a list to its n-th entry.
struct Nth(usize);

impl<'de> DeserializeSeed<'de> for Nth {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Nth {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.0 {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Stop)?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// Fails on whatever value it is given: the error takes the value's position.
struct Stop;

impl<'de> DeserializeSeed<'de> for Stop {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Stop {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(FOUND)
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "leaderd.yaml";

    /// The error's line and its one-line message.
    fn fail(text: &str) -> (Option<usize>, String) {
        let e = parse(FILE, text).expect_err("the file is refused");
        let message = e.to_string();
        assert!(!message.contains('\n'), "one line: {message}");
        assert!(message.contains("; fix: "), "names the fix: {message}");
        match e.line() {
            Some(l) => assert!(message.starts_with(&format!("{FILE}:{l}: ")), "{message}"),
            None => assert!(message.starts_with(&format!("{FILE}: ")), "{message}"),
        }
        (e.line(), message)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_good_file_gives_its_entries_with_defaults_and_lines() {
        let text = "\
# One sidecar, two leases and a group.
identity: my-pod
groups:
  - name: partitions
    shards: 64
    renewDeadline: 8s
    retryPeriod: 1500ms
leases:
  - name: billing-cron
    leaseDuration: 20s
  -
    name: reports.daily
  - {name: flow, retryPeriod: 1s}
";
        let c = parse(FILE, text).unwrap();
        assert_eq!(c.identity.as_deref(), Some("my-pod"));
        let got: Vec<_> = c
            .entries
            .iter()
            .map(|e| {
                let t = e.timing;
                let timing = (t.lease_duration, t.renew_deadline, t.retry_period);
                (e.name.as_str(), e.shards, timing, e.line, e.kind())
            })
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(
            got,
            [
                (
                    "partitions",
                    Some(64),
                    (secs(15), secs(8), ms(1500)),
                    4,
                    "group"
                ),
                (
                    "billing-cron",
                    None,
                    (secs(20), secs(10), secs(2)),
                    9,
                    "lease"
                ),
                (
                    "reports.daily",
                    None,
                    (secs(15), secs(10), secs(2)),
                    12,
                    "lease"
                ),
                ("flow", None, (secs(15), secs(10), secs(1)), 13, "lease"),
            ]
        );
        // Only groups, no identity; null timing keys take the defaults.
        let c = parse(FILE, "groups:\n- name: g\n  shards: 1\n  leaseDuration:\n").unwrap();
        assert_eq!(c.identity, None);
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.entries[0].timing.lease_duration, DEFAULT_LEASE_DURATION);
        assert_eq!(c.entries[0].line, 2);
    }

    #[test]
    fn an_unknown_top_level_key_lists_the_allowed_ones() {
        let (line, m) = fail("leases:\n  - name: a\ngroup:\n  - name: g\n    shards: 4\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(
            m.contains("unknown field `group`, expected one of `identity`, `leases`, `groups`"),
            "{m}"
        );
        assert!(m.contains("fix: use one of the keys listed"), "{m}");
    }

    #[test]
    fn an_unknown_entry_key_lists_the_allowed_ones() {
        let (line, m) = fail("groups:\n  - name: g\n    shard: 4\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(
            m.contains("groups[0]: unknown field `shard`, expected one of `name`, `shards`, `leaseDuration`, `renewDeadline`, `retryPeriod`"),
            "{m}"
        );
        assert!(m.contains("fix: use one of the keys listed"), "{m}");
        // shards under a lease: says where it belongs.
        let (line, m) = fail("leases:\n  - name: a\n\n    shards: 4\n");
        assert_eq!(line, Some(4), "{m}");
        assert!(m.contains("unknown field `shards`"), "{m}");
        assert!(
            m.contains("fix: a single lease has no shards: move the entry under \"groups:\""),
            "{m}"
        );
    }

    #[test]
    fn a_bad_duration_names_the_key_and_its_line() {
        let (line, m) = fail("leases:\n  - name: a\n  - name: b\n    leaseDuration: 15 parsecs\n");
        assert_eq!(line, Some(4), "{m}");
        assert!(
            m.contains("leases[1].leaseDuration: \"15 parsecs\" is not a duration"),
            "{m}"
        );
        assert!(m.contains("parsecs"), "{m}");
        assert!(
            m.ends_with("; fix: write a number and a unit, e.g. 15s, 1m30s or 500ms"),
            "{m}"
        );
        let (line, m) = fail("groups:\n  - name: g\n    shards: 2\n    retryPeriod: 3\n");
        assert_eq!(line, Some(4), "{m}");
        assert!(
            m.contains("groups[0].retryPeriod: \"3\" is not a duration"),
            "{m}"
        );
    }

    #[test]
    fn a_broken_timing_rule_points_at_the_entry_with_the_yaml_keys() {
        let text = "\
leases:
  - name: a
groups:
  - name: g
    shards: 4
    leaseDuration: 10s
    renewDeadline: 10s
";
        let (line, m) = fail(text);
        assert_eq!(line, Some(4), "{m}");
        assert_eq!(
            m,
            "leaderd.yaml:4: group \"g\": renewDeadline 10s must be shorter than leaseDuration 10s; fix: lower the deadline or raise the duration (defaults 10s < 15s)"
        );
        let (line, m) = fail("leases:\n  - name: a\n    leaseDuration: 500ms\n");
        assert_eq!(line, Some(2), "{m}");
        assert!(
            m.contains(
                "lease \"a\": leaseDuration 500ms is below 1s; fix: the Lease stores whole seconds"
            ),
            "{m}"
        );
        let (line, m) = fail("leases:\n  - name: a\n  - name: b\n    retryPeriod: 10s\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(m.contains("retryPeriod 10s must be shorter than renewDeadline 10s; fix: lower the retry period"), "{m}");
        assert!(!m.contains("--"), "no flag names: {m}");
    }

    #[test]
    fn shards_out_of_range_are_refused_at_the_group() {
        for (n, what) in [(0, "shards 0"), (5000, "shards 5000")] {
            let text = format!("leases:\n  - name: a\ngroups:\n  - name: g\n    shards: {n}\n");
            let (line, m) = fail(&text);
            assert_eq!(line, Some(4), "{m}");
            assert!(
                m.contains(&format!("group \"g\": {what} is out of range")),
                "{m}"
            );
            assert!(m.contains("fix: give 1 to 4096 shards"), "{m}");
        }
    }

    #[test]
    fn bad_names_are_refused_with_the_rules() {
        let (line, m) = fail("leases:\n  - name: ok\n  - name: Bad_Name\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(m.contains("lease name \"Bad_Name\" is not a valid DNS-1123 subdomain; fix: use lowercase letters"), "{m}");
        let (line, m) = fail("groups:\n  - name: a.b\n    shards: 2\n");
        assert_eq!(line, Some(2), "{m}");
        assert!(
            m.contains("group name \"a.b\" is not a valid DNS-1123 label"),
            "{m}"
        );
        let long = "g".repeat(64);
        let (line, m) = fail(&format!("groups:\n  - shards: 2\n    name: {long}\n"));
        assert_eq!(line, Some(2), "{m}");
        assert!(
            m.contains(&format!(
                "group name \"{long}\" is 64 characters long, more than the 63"
            )),
            "{m}"
        );
        assert!(
            m.contains("fix: shorten it to at most 63 characters"),
            "{m}"
        );
        assert!(parse(
            FILE,
            &format!("groups:\n  - shards: 2\n    name: {}\n", &long[..63])
        )
        .is_ok());
        let (line, m) = fail("leases:\n  - leaseDuration: 15s\n");
        assert_eq!(line, Some(2), "{m}");
        assert!(
            m.contains("missing field `name`; fix: add \"name: ...\""),
            "{m}"
        );
        let (line, m) =
            fail("identity: a\nleases:\n  - name: a\n  - name: b\ngroups:\n  - name: g\n");
        assert_eq!(line, Some(6), "{m}");
        assert!(m.contains("missing field `shards`"), "{m}");
        let (line, m) = fail("leases:\n  - name: a\nidentity: \" \"\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(m.contains("identity \" \" is empty"), "{m}");
    }

    #[test]
    fn a_name_used_twice_names_both_lines() {
        let text = "\
leases:
  - name: x
  - name: y
groups:
  - name: x
    shards: 3
";
        let (line, m) = fail(text);
        assert_eq!(line, Some(5), "{m}");
        assert_eq!(
            m,
            "leaderd.yaml:5: name \"x\" is used twice, by the lease at line 2 and the group at line 5; fix: rename one of them: every lease and group is a Lease of its name in the namespace, so names are unique across leases and groups"
        );
        let (line, m) = fail("leases:\n  - name: y\n  - name: y\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(
            m.contains("by the lease at line 2 and the lease at line 3"),
            "{m}"
        );
    }

    #[test]
    fn a_lease_named_like_a_groups_leases_is_refused() {
        let text = "\
groups:
  - name: partitions
    shards: 8
leases:
  - name: partitions-shards
";
        let (line, m) = fail(text);
        assert_eq!(line, Some(5), "{m}");
        assert!(
            m.contains("lease name \"partitions-shards\" is taken by the group \"partitions\" at line 2, which keeps its assignment in the Lease \"partitions-shards\""),
            "{m}"
        );
        assert!(
            m.ends_with(
                "; fix: rename the lease \"partitions-shards\" or the group \"partitions\""
            ),
            "{m}"
        );
        let (line, m) =
            fail("leases:\n  - name: p-m-1a2b3c4d\ngroups:\n  - name: p\n    shards: 8\n");
        assert_eq!(line, Some(2), "{m}");
        assert!(
            m.contains("keeps its members' records in the Leases \"p-m-<hash>\""),
            "{m}"
        );
        // A group named like another group's assignment Lease.
        let (line, m) =
            fail("groups:\n  - name: p\n    shards: 8\n  - name: p-shards\n    shards: 8\n");
        assert_eq!(line, Some(4), "{m}");
        assert!(
            m.contains("group name \"p-shards\" is taken by the group \"p\""),
            "{m}"
        );
        // Merely similar names are fine.
        assert!(parse(
            FILE,
            "groups:\n  - name: p\n    shards: 8\nleases:\n  - name: p-shard\n  - name: p-main\n"
        )
        .is_ok());
    }

    #[test]
    fn a_file_without_entries_says_what_to_add() {
        let expected = "leaderd.yaml: names no lease and no group; fix: add a \"leases:\" or \"groups:\" list (see README \"Config file\")";
        for text in [
            "",
            "# nothing yet\n",
            "---\n",
            "identity: p\n",
            "leases: []\ngroups:\n",
        ] {
            let e = parse(FILE, text).unwrap_err();
            assert_eq!(e, FileError::Empty { file: FILE.into() });
            assert_eq!(e.to_string(), expected);
        }
    }

    #[test]
    fn yaml_syntax_errors_and_wrong_types_have_their_line() {
        let (line, m) = fail("leases:\n  - name: a\n   renewDeadline: 5s\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(
            m.starts_with("leaderd.yaml:3: did not find expected '-' indicator, while parsing a block collection at line 2 column 3; fix: correct the YAML there"),
            "{m}"
        );
        let (line, m) = fail("leases:\n  - name: a: b\n");
        assert_eq!(line, Some(2), "{m}");
        assert!(m.contains("mapping values are not allowed"), "{m}");
        let (line, m) = fail("leases:\n  - name: a\n    leaseDuration: [15s\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(
            m.contains("leases[0].leaseDuration: invalid type: sequence, expected a duration"),
            "{m}"
        );
        let (line, m) = fail("leases:\n  - name: a\n\tleaseDuration: 15s\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(
            m.contains("fix: correct the YAML there: indent with spaces, not tabs"),
            "{m}"
        );
        let (line, m) = fail("groups:\n  - name: g\n    shards: many\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(
            m.contains("groups[0].shards: invalid type: string \"many\", expected u32"),
            "{m}"
        );
        assert!(
            m.contains("fix: give a whole number of shards, 1 to 4096"),
            "{m}"
        );
        let (line, m) = fail("\nleases: billing-cron\n");
        assert_eq!(line, Some(2), "{m}");
        assert!(m.contains("leases: invalid type: string \"billing-cron\", expected a sequence; fix: make it a list"), "{m}");
        let (line, m) = fail("leases:\n  - name: a\n  - b\n");
        assert_eq!(line, Some(3), "{m}");
        assert!(
            m.contains("leases[1]: invalid type: string \"b\", expected a lease: a mapping with the keys name, leaseDuration"),
            "{m}"
        );
        let (line, m) = fail("- leases\n");
        assert_eq!(line, Some(1), "{m}");
        assert!(
            m.contains("invalid type: sequence, expected a mapping with the keys identity, leases and groups"),
            "{m}"
        );
        let (line, m) = fail("leases:\n  - name: a\n    name: b\n");
        assert_eq!(line, Some(2), "{m}");
        assert!(m.contains("duplicate field `name`"), "{m}");
    }

    #[test]
    fn load_reads_the_file_and_says_why_it_cannot() {
        let e = load(Path::new("/nonexistent/leaderd.yaml")).unwrap_err();
        assert!(matches!(e, FileError::Unreadable { .. }));
        let m = e.to_string();
        assert!(
            m.starts_with("/nonexistent/leaderd.yaml: the config file could not be read: No such file or directory"),
            "{m}"
        );
        assert!(m.contains("; fix: check the path given to --config"), "{m}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leaderd.yaml");
        std::fs::write(&path, "leases:\n  - name: a\n    renewDeadline: 20s\n").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:2: lease \"a\": renewDeadline 20s",
                path.display()
            )),
            "{e}"
        );
        std::fs::write(&path, "leases:\n  - name: a\n").unwrap();
        assert_eq!(load(&path).unwrap().entries[0].name, "a");
    }
}
