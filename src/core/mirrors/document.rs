//! The administrator's registries.conf as an editable TOML document with ownership markers.
//!
//! The agent owns exactly what it marked: `[[registry]]` and `[[registry.mirror]]` tables whose
//! header line ends in `# rhel-node-agent:managed v1`, and single keys it set on the administrator's
//! own tables (`blocked = true # rhel-node-agent:managed v1 was=absent`). The marker lives in the file
//! itself, so a lost state directory never leads to duplicated mirrors or orphaned entries; `was=`
//! records what the key was before, so removing a policy restores the administrator's file exactly.
//! Marker version 1 must stay readable by every later version of the agent.

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

use super::model::{Mirror, Registry};
use super::MirrorError;

/// The text of a decor's suffix (`default` when absent or not plain text).
fn suffix_of<'d>(d: &'d toml_edit::Decor, default: &'d str) -> &'d str {
    d.suffix().and_then(|s| s.as_str()).unwrap_or(default)
}

/// The text of a decor's prefix (`default` when absent or not plain text).
fn prefix_of<'d>(d: &'d toml_edit::Decor, default: &'d str) -> &'d str {
    d.prefix().and_then(|s| s.as_str()).unwrap_or(default)
}

/// True when a decor's suffix carries the agent's marker (a managed table, or a key set by it).
fn marked(d: &toml_edit::Decor) -> bool {
    suffix_of(d, "").contains(MARKER)
}

/// The marker every managed table and key carries (followed by ` v<version>`).
pub const MARKER: &str = "# rhel-node-agent:managed";
/// The marker version this agent writes.
pub const MARKER_VERSION: u32 = 1;

/// Keys the agent writes in a `[[registry]]` table it manages.
const AGENT_REGISTRY_KEYS: &[&str] = &[
    "prefix",
    "location",
    "insecure",
    "blocked",
    "mirror-by-digest-only",
    "mirror",
];
/// Keys the agent writes in a `[[registry.mirror]]` table it manages.
const AGENT_MIRROR_KEYS: &[&str] = &["location", "insecure", "pull-from-mirror"];

fn table_marker() -> String {
    format!(" {MARKER} v{MARKER_VERSION}")
}

/// What a marker found in a decor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// Whole table managed.
    Table,
    /// Key set by the agent; the key did not exist before.
    WasAbsent,
    /// Key set by the agent; it was `false` before.
    WasFalse,
}

/// Find the agent's marker in a decor suffix. Returns the byte offset where our text starts
/// (including the one space we put before it) and what it says.
fn find_marker(
    suffix: &str,
    file: &str,
    what: &str,
) -> Result<Option<(usize, Marker)>, MirrorError> {
    let Some(pos) = suffix.rfind(MARKER) else {
        return Ok(None);
    };
    let rest = suffix[pos + MARKER.len()..].trim();
    let mut words = rest.split_whitespace();
    let version = words
        .next()
        .and_then(|v| v.strip_prefix('v'))
        .and_then(|v| v.parse::<u32>().ok());
    match version {
        Some(1) => {}
        Some(v) if v > MARKER_VERSION => {
            return Err(MirrorError::NotEditable {
                file: file.to_string(),
                what: what.to_string(),
                message: format!(
                    "managed by a newer rhel-node-agent (marker v{v}); refusing to edit it"
                ),
            })
        }
        _ => {
            return Err(MirrorError::NotEditable {
                file: file.to_string(),
                what: what.to_string(),
                message: format!("unreadable ownership marker {:?}", suffix[pos..].trim_end()),
            })
        }
    }
    // Anything after a further `#` is the administrator's own note on the line: kept, ignored.
    let marker = match words.next() {
        None => Marker::Table,
        Some(w) if w.starts_with('#') => Marker::Table,
        Some("was=absent") => Marker::WasAbsent,
        Some("was=false") => Marker::WasFalse,
        Some(other) => {
            return Err(MirrorError::NotEditable {
                file: file.to_string(),
                what: what.to_string(),
                message: format!("unknown ownership marker field {other:?}"),
            })
        }
    };
    let start = if pos > 0 && suffix.as_bytes()[pos - 1] == b' ' {
        pos - 1
    } else {
        pos
    };
    Ok(Some((start, marker)))
}

/// A key an administrator added inside a table the agent manages: kept and reported.
#[derive(Debug, Clone)]
pub struct AdminKey {
    /// Scope of the managed `[[registry]]` it was found in.
    pub scope: String,
    /// Mirror location when it was inside a managed `[[registry.mirror]]`.
    pub mirror: Option<String>,
    /// The key.
    pub key: String,
    item: Item,
}

/// What [`strip_managed`] removed, for reports and for re-attaching administrator keys.
#[derive(Debug, Clone, Default)]
pub struct StripReport {
    /// Managed `[[registry]]` tables removed.
    pub tables: usize,
    /// Managed mirrors removed from administrator tables.
    pub mirrors: usize,
    /// Managed keys reverted on administrator tables.
    pub keys: usize,
    /// Keys the administrator added inside managed tables.
    pub admin_keys: Vec<AdminKey>,
    /// Comment lines the administrator wrote inside managed tables (kept: moved to the end of the
    /// file when their table is removed).
    pub admin_comments: Vec<String>,
    /// `[[registry.mirror]]` tables without a marker inside a managed `[[registry]]`: added by
    /// the administrator, so kept (scope of the entry, the table).
    pub admin_mirrors: Vec<(String, Table)>,
    /// Values of agent flags inside managed tables that the agent never writes (anything but
    /// `true`), to report hand edits the next render replaces (scope, key, value as written).
    pub agent_values: Vec<(String, String, String)>,
}

impl StripReport {
    /// True when the document held nothing the agent manages.
    pub fn is_empty(&self) -> bool {
        self.tables == 0 && self.mirrors == 0 && self.keys == 0
    }
}

fn scope_of(t: &Table) -> String {
    let get = |k: &str| t.get(k).and_then(|i| i.as_str()).unwrap_or("").to_string();
    let p = get("prefix");
    if p.is_empty() {
        get("location")
    } else {
        p
    }
}

/// Revert every managed key of `t` (keys set on an administrator's table).
fn revert_keys(
    t: &mut Table,
    file: &str,
    what: &str,
    report: &mut StripReport,
) -> Result<(), MirrorError> {
    let keys: Vec<String> = t.iter().map(|(k, _)| k.to_string()).collect();
    for k in keys {
        let Some(Item::Value(v)) = t.get(&k) else {
            continue;
        };
        let suffix = suffix_of(v.decor(), "").to_string();
        let Some((start, marker)) = find_marker(&suffix, file, &format!("{what}.{k}"))? else {
            continue;
        };
        report.keys += 1;
        match marker {
            Marker::WasAbsent | Marker::Table => {
                t.remove(&k);
            }
            Marker::WasFalse => {
                let prefix = prefix_of(v.decor(), " ").to_string();
                // An administrator's note written after our marker stays on the line.
                let after_marker = suffix[start..]
                    .find(MARKER)
                    .map(|p| start + p + MARKER.len())
                    .unwrap_or(suffix.len());
                let note = suffix[after_marker..]
                    .find('#')
                    .map(|i| format!(" {}", &suffix[after_marker + i..]))
                    .unwrap_or_default();
                let mut nv = Value::from(false);
                nv.decor_mut().set_prefix(prefix);
                nv.decor_mut()
                    .set_suffix(format!("{}{note}", &suffix[..start]));
                t.insert(&k, Item::Value(nv));
            }
        }
    }
    Ok(())
}

fn table_is_managed(t: &Table, file: &str, what: &str) -> Result<bool, MirrorError> {
    let suffix = suffix_of(t.decor(), "");
    Ok(matches!(
        find_marker(suffix, file, what)?,
        Some((_, Marker::Table))
    ))
}

/// Remove everything the agent manages from `doc`, leaving the administrator's file as it was
/// before the agent touched it. `file` is only used in messages.
pub fn strip_managed(doc: &mut DocumentMut, file: &str) -> Result<StripReport, MirrorError> {
    let mut report = StripReport::default();
    let Some(item) = doc.get_mut("registry") else {
        return Ok(report);
    };
    let Some(aot) = item.as_array_of_tables_mut() else {
        return Ok(report);
    };
    let mut i = aot.len();
    while i > 0 {
        i -= 1;
        let Some(t) = aot.get_mut(i) else { continue };
        let scope = scope_of(t);
        let what = super::containers::entry_name(i, &scope);
        if table_is_managed(t, file, &what)? {
            for (k, v) in t.iter() {
                if !AGENT_REGISTRY_KEYS.contains(&k) {
                    report.admin_keys.push(AdminKey {
                        scope: scope.clone(),
                        mirror: None,
                        key: k.to_string(),
                        item: v.clone(),
                    });
                }
            }
            if let Some(Item::ArrayOfTables(ms)) = t.get("mirror") {
                let (ours, theirs): (Vec<&Table>, Vec<&Table>) =
                    ms.iter().partition(|m| marked(m.decor()));
                let mut ours_aot = ArrayOfTables::new();
                for m in &ours {
                    ours_aot.push((*m).clone());
                }
                collect_mirror_admin_keys(&ours_aot, &scope, &mut report);
                for m in ours.iter().rev() {
                    collect_comments(m, &mut report.admin_comments);
                }
                for m in theirs.iter().rev() {
                    report.admin_mirrors.push((scope.clone(), (*m).clone()));
                }
            }
            // The agent only ever writes these flags as `true`; any other value is a hand edit
            // (a `true` may be the agent's own from a policy that has changed since).
            for k in ["insecure", "blocked", "mirror-by-digest-only"] {
                if let Some(Item::Value(v)) = t.get(k).filter(|v| v.as_bool() != Some(true)) {
                    report.agent_values.push((
                        scope.clone(),
                        k.to_string(),
                        v.clone().decorated("", "").to_string(),
                    ));
                }
            }
            collect_comments(t, &mut report.admin_comments);
            aot.remove(i);
            report.tables += 1;
            continue;
        }
        revert_keys(t, file, &what, &mut report)?;
        if let Some(Item::ArrayOfTables(ms)) = t.get_mut("mirror") {
            let mut j = ms.len();
            while j > 0 {
                j -= 1;
                let Some(m) = ms.get_mut(j) else { continue };
                let mwhat = format!("{what}.mirror[{j}]");
                if table_is_managed(m, file, &mwhat)? {
                    let single = {
                        let mut a = ArrayOfTables::new();
                        a.push(m.clone());
                        a
                    };
                    collect_mirror_admin_keys(&single, &scope, &mut report);
                    collect_comments(m, &mut report.admin_comments);
                    ms.remove(j);
                    report.mirrors += 1;
                } else {
                    revert_keys(m, file, &mwhat, &mut report)?;
                }
            }
            if ms.is_empty() {
                t.remove("mirror");
            }
        }
    }
    if aot.is_empty() {
        doc.remove("registry");
    }
    if !report.admin_comments.is_empty() {
        // Collected bottom-up; keep the administrator's order.
        report.admin_comments.reverse();
        let old = doc.trailing().as_str().unwrap_or("").to_string();
        let moved: String = report
            .admin_comments
            .iter()
            .map(|c| format!("{c}\n"))
            .collect();
        doc.set_trailing(format!("{old}{moved}"));
    }
    Ok(report)
}

/// Comment lines inside a managed table (its header's leading lines, leading lines of its keys,
/// comments after its values). The agent writes none, so every one is the administrator's.
fn collect_comments(t: &Table, out: &mut Vec<String>) {
    let mut found: Vec<String> = Vec::new();
    let mut take = |raw: Option<&str>| {
        for line in raw.unwrap_or("").lines() {
            let l = line.trim();
            if l.starts_with('#') && !l.contains(MARKER) {
                found.push(l.to_string());
            }
        }
    };
    take(t.decor().prefix().and_then(|s| s.as_str()));
    take(
        t.decor()
            .suffix()
            .and_then(|s| s.as_str())
            .and_then(|s| s.find('#').map(|i| &s[i..])),
    );
    for (k, v) in t.iter() {
        if let Some(key) = t.key(k) {
            take(key.leaf_decor().prefix().and_then(|s| s.as_str()));
        }
        if let Item::Value(v) = v {
            take(
                v.decor()
                    .suffix()
                    .and_then(|s| s.as_str())
                    .and_then(|s| s.find('#').map(|i| &s[i..])),
            );
        }
    }
    // Pushed in reverse so that the final reverse() in strip_managed restores file order.
    out.extend(found.into_iter().rev());
}

fn collect_mirror_admin_keys(ms: &ArrayOfTables, scope: &str, report: &mut StripReport) {
    for m in ms.iter() {
        let loc = m
            .get("location")
            .and_then(|i| i.as_str())
            .unwrap_or("")
            .to_string();
        for (k, v) in m.iter() {
            if !AGENT_MIRROR_KEYS.contains(&k) {
                report.admin_keys.push(AdminKey {
                    scope: scope.to_string(),
                    mirror: Some(loc.clone()),
                    key: k.to_string(),
                    item: v.clone(),
                });
            }
        }
    }
}

/// Append a TOML string value as the agent's tables write it (toml_edit's default representation).
fn push_repr(out: &mut String, s: &str) {
    let plain = s
        .chars()
        .all(|c| c != '"' && c != '\\' && c != '\'' && !c.is_control());
    if plain {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&toml_edit::Value::from(s).to_string());
    }
}

/// The marker the agent's tables carry, as it follows `[[registry]]` (with the line end).
pub(crate) fn marker_line() -> String {
    format!(" {MARKER} v{MARKER_VERSION}\n")
}

/// The text of one appended `[[registry]]` table, byte for byte what toml_edit writes for
/// [`registry_table`] after another table: how the agent's new entries are written (8,000
/// toml_edit tables for 2,000 sources were most of a one-shot render's time and memory), and what
/// the daemon's incremental path splices. `marker` is [`marker_line`].
pub(crate) fn table_text(r: &Registry, marker: &str) -> String {
    let mut s = String::with_capacity(160 + r.mirrors.len() * 160);
    s.push_str("\n[[registry]]");
    s.push_str(marker);
    if !r.prefix.is_empty() {
        s.push_str("prefix = ");
        push_repr(&mut s, &r.prefix);
        s.push('\n');
    }
    if !r.location.is_empty() {
        s.push_str("location = ");
        push_repr(&mut s, &r.location);
        s.push('\n');
    }
    for (line, on) in [
        ("insecure = true\n", r.insecure),
        ("blocked = true\n", r.blocked),
        ("mirror-by-digest-only = true\n", r.mirror_by_digest_only),
    ] {
        if on {
            s.push_str(line);
        }
    }
    for m in &r.mirrors {
        s.push_str("\n[[registry.mirror]]");
        s.push_str(marker);
        s.push_str("location = ");
        push_repr(&mut s, &m.location);
        s.push('\n');
        if m.insecure {
            s.push_str("insecure = true\n");
        }
        if !m.pull_from_mirror.is_empty() {
            s.push_str("pull-from-mirror = ");
            push_repr(&mut s, &m.pull_from_mirror);
            s.push('\n');
        }
    }
    s
}

/// A comment no administrator writes: it marks the one table that stands for all of the agent's
/// new entries while the document is serialised; their text then takes its place.
const PLACEHOLDER: &str = " # rhel-node-agent:new-entries 4f1d2a9c";

/// The stand-in's comment is in `text` (an administrator copied it): new entries are built as
/// tables then.
pub fn has_placeholder(text: &str) -> bool {
    text.contains(PLACEHOLDER)
}

/// The document's text with the agent's new entries (`new`, the entries [`apply_changes`] was
/// given beyond the base, in order) written where toml_edit would have written them. With
/// `as_text` given to [`apply_changes`], they are one placeholder table in the document: its text
/// is replaced by theirs. When the placeholder is not written plainly (the first table of an
/// otherwise empty document has no blank line before it), the real tables are built instead.
pub fn serialize_with_new_entries(doc: &mut DocumentMut, new: &[Registry]) -> String {
    let text = doc.to_string();
    if new.is_empty() {
        return text;
    }
    let needle = format!("\n[[registry]]{PLACEHOLDER}\n");
    if let Some(at) = text.find(&needle) {
        if !text[at + needle.len()..].contains(&needle) {
            let marker = marker_line();
            let mut out = String::with_capacity(text.len() + new.len() * 400);
            out.push_str(&text[..at]);
            for r in new {
                out.push_str(&table_text(r, &marker));
            }
            out.push_str(&text[at + needle.len()..]);
            return out;
        }
    }
    if let Some(aot) = doc
        .get_mut("registry")
        .and_then(Item::as_array_of_tables_mut)
    {
        let last = aot.len().checked_sub(1);
        if last
            .and_then(|i| aot.get(i))
            .is_some_and(|t| t.decor().suffix().and_then(|s| s.as_str()) == Some(PLACEHOLDER))
        {
            aot.remove(aot.len() - 1);
        }
        for r in new {
            aot.push(registry_table(r));
        }
    }
    doc.to_string()
}

fn managed_table() -> Table {
    let mut t = Table::new();
    t.decor_mut().set_suffix(table_marker());
    t
}

fn mirror_table(m: &Mirror) -> Table {
    let mut t = managed_table();
    t.insert("location", toml_edit::value(m.location.clone()));
    if m.insecure {
        t.insert("insecure", toml_edit::value(true));
    }
    if !m.pull_from_mirror.is_empty() {
        t.insert(
            "pull-from-mirror",
            toml_edit::value(m.pull_from_mirror.clone()),
        );
    }
    t
}

fn registry_table(r: &Registry) -> Table {
    let mut t = managed_table();
    if !r.prefix.is_empty() {
        t.insert("prefix", toml_edit::value(r.prefix.clone()));
    }
    if !r.location.is_empty() {
        t.insert("location", toml_edit::value(r.location.clone()));
    }
    for (k, on) in [
        ("insecure", r.insecure),
        ("blocked", r.blocked),
        ("mirror-by-digest-only", r.mirror_by_digest_only),
    ] {
        if on {
            t.insert(k, toml_edit::value(true));
        }
    }
    if !r.mirrors.is_empty() {
        let mut a = ArrayOfTables::new();
        for m in &r.mirrors {
            a.push(mirror_table(m));
        }
        t.insert("mirror", Item::ArrayOfTables(a));
    }
    t
}

/// An unmarked `[[registry]]` for `scope` (wildcards in `prefix`, others in `location`, as MCO
/// creates entries): where the administrator's own keys and mirrors go when their managed entry
/// is gone.
fn unmanaged_entry(scope: &str) -> Table {
    let mut t = registry_table(&Registry::for_scope(scope));
    t.decor_mut().set_suffix("");
    t
}

/// Set `key = true` on an administrator's table, recording what it was.
fn set_flag_marked(t: &mut Table, key: &str) {
    match t.get(key) {
        Some(Item::Value(v)) => {
            let prefix = prefix_of(v.decor(), " ").to_string();
            let suffix = suffix_of(v.decor(), "").to_string();
            let mut nv = Value::from(true);
            nv.decor_mut().set_prefix(prefix);
            nv.decor_mut()
                .set_suffix(format!("{suffix} {MARKER} v{MARKER_VERSION} was=false"));
            t.insert(key, Item::Value(nv));
        }
        _ => {
            let mut nv = Value::from(true);
            nv.decor_mut()
                .set_suffix(format!(" {MARKER} v{MARKER_VERSION} was=absent"));
            t.insert(key, Item::Value(nv));
        }
    }
}

/// Write the difference between `base` (the entries of the stripped document, in order) and
/// `rendered` (MCO's result on them) into `doc`, marking everything the agent adds or sets.
/// With `as_text`, the new entries are one stand-in table that
/// [`serialize_with_new_entries`] replaces with their text.
pub fn apply_changes(
    doc: &mut DocumentMut,
    file: &str,
    base: &[Registry],
    rendered: &[Registry],
    as_text: bool,
) -> Result<(), MirrorError> {
    let needs_base_edit = base.iter().zip(rendered).any(|(b, r)| b != r);
    let has_new = rendered.len() > base.len();
    if !needs_base_edit && !has_new {
        return Ok(());
    }
    let not_editable = |what: String, message: &str| MirrorError::NotEditable {
        file: file.to_string(),
        what,
        message: message.to_string(),
    };
    if doc
        .get("registry")
        .map(|i| !i.is_array_of_tables())
        .unwrap_or(false)
    {
        return Err(not_editable(
            "registry".into(),
            "written as an inline array; in-place editing needs [[registry]] tables (use drop-in mode, or rewrite it as [[registry]] tables)",
        ));
    }
    if doc.get("registry").is_none() {
        doc.insert("registry", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let aot = doc
        .get_mut("registry")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| not_editable("registry".into(), "not an array of tables"))?;
    for (i, (b, r)) in base.iter().zip(rendered).enumerate() {
        if b == r {
            continue;
        }
        let what = super::containers::entry_name(i, b.scope());
        let t = aot
            .get_mut(i)
            .ok_or_else(|| not_editable(what.clone(), "entry missing from the document"))?;
        for (k, was, now) in [
            ("insecure", b.insecure, r.insecure),
            ("blocked", b.blocked, r.blocked),
            (
                "mirror-by-digest-only",
                b.mirror_by_digest_only,
                r.mirror_by_digest_only,
            ),
        ] {
            if !was && now {
                set_flag_marked(t, k);
            }
        }
        let mirrors_changed = b.mirrors.len() != r.mirrors.len()
            || b.mirrors.iter().zip(&r.mirrors).any(|(x, y)| x != y);
        if !mirrors_changed {
            continue;
        }
        if t.get("mirror")
            .map(|m| !m.is_array_of_tables())
            .unwrap_or(false)
        {
            return Err(not_editable(
                format!("{what}.mirror"),
                "written as an inline array; in-place editing needs [[registry.mirror]] tables",
            ));
        }
        if t.get("mirror").is_none() {
            t.insert("mirror", Item::ArrayOfTables(ArrayOfTables::new()));
        }
        let ms = t
            .get_mut("mirror")
            .and_then(Item::as_array_of_tables_mut)
            .ok_or_else(|| not_editable(format!("{what}.mirror"), "not an array of tables"))?;
        for (j, (bm, rm)) in b.mirrors.iter().zip(&r.mirrors).enumerate() {
            if !bm.insecure && rm.insecure {
                if let Some(mt) = ms.get_mut(j) {
                    set_flag_marked(mt, "insecure");
                }
            }
        }
        for m in &r.mirrors[b.mirrors.len()..] {
            ms.push(mirror_table(m));
        }
    }
    if as_text && rendered.len() > base.len() {
        // One stand-in; serialize_with_new_entries writes the entries' text in its place.
        let mut t = Table::new();
        t.decor_mut().set_suffix(PLACEHOLDER);
        aot.push(t);
    } else {
        for r in &rendered[base.len()..] {
            aot.push(registry_table(r));
        }
    }
    Ok(())
}

/// Put keys an administrator had added inside managed tables back into the matching new managed
/// tables. Returns the keys that could not be placed (their table is no longer managed).
pub fn reattach_admin_keys(doc: &mut DocumentMut, keys: Vec<AdminKey>) -> Vec<AdminKey> {
    let mut lost = Vec::new();
    let Some(aot) = doc
        .get_mut("registry")
        .and_then(Item::as_array_of_tables_mut)
    else {
        return keys;
    };
    for k in keys {
        let target = aot.iter_mut().find(|t| {
            let managed = marked(t.decor());
            managed && scope_of(t) == k.scope
        });
        let placed = match (target, &k.mirror) {
            (Some(t), None) => {
                t.insert(&k.key, k.item.clone());
                true
            }
            (Some(t), Some(loc)) => {
                match t.get_mut("mirror").and_then(Item::as_array_of_tables_mut) {
                    Some(ms) => match ms
                        .iter_mut()
                        .find(|m| m.get("location").and_then(|i| i.as_str()) == Some(loc))
                    {
                        Some(m) => {
                            m.insert(&k.key, k.item.clone());
                            true
                        }
                        None => false,
                    },
                    None => false,
                }
            }
            (None, _) => false,
        };
        if !placed {
            lost.push(k);
        }
    }
    lost
}

/// Keep an administrator's keys whose managed `[[registry]]` is gone: the table stays, unmanaged,
/// with its scope key and those keys (so nothing the administrator typed is ever deleted).
pub fn keep_orphaned_admin_keys(doc: &mut DocumentMut, keys: &[AdminKey]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut by_scope: Vec<(String, Table)> = Vec::new();
    for k in keys.iter().filter(|k| k.mirror.is_none()) {
        let idx = match by_scope.iter().position(|(s, _)| *s == k.scope) {
            Some(i) => i,
            None => {
                by_scope.push((k.scope.clone(), unmanaged_entry(&k.scope)));
                by_scope.len() - 1
            }
        };
        by_scope[idx].1.insert(&k.key, k.item.clone());
        kept.push(format!("registry {:?}: key {:?}", k.scope, k.key));
    }
    if by_scope.is_empty() {
        return kept;
    }
    if doc.get("registry").is_none() {
        doc.insert("registry", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    if let Some(aot) = doc
        .get_mut("registry")
        .and_then(Item::as_array_of_tables_mut)
    {
        for (_, t) in by_scope {
            aot.push(t);
        }
    }
    kept
}

/// Scopes (as containers/image keys them: prefix, else location, trailing `/` stripped) of the
/// `[[registry]]` tables in `doc` that hold anything the agent manages. Used to warn when a drop-in
/// shadows them.
pub fn managed_scopes(doc: &DocumentMut) -> Vec<String> {
    let mut out = Vec::new();
    let Some(aot) = doc.get("registry").and_then(Item::as_array_of_tables) else {
        return out;
    };
    for t in aot.iter() {
        let table_managed = marked(t.decor());
        let key_managed = t
            .iter()
            .any(|(_, v)| matches!(v, Item::Value(v) if marked(v.decor())));
        let mirror_managed = t
            .get("mirror")
            .and_then(Item::as_array_of_tables)
            .map(|ms| {
                ms.iter().any(|m| {
                    marked(m.decor())
                        || m.iter()
                            .any(|(_, v)| matches!(v, Item::Value(v) if marked(v.decor())))
                })
            })
            .unwrap_or(false);
        if table_managed || key_managed || mirror_managed {
            out.push(scope_of(t).trim_end_matches('/').to_string());
        }
    }
    out
}

/// A whole drop-in file holding `entries` (complete entries: a drop-in replaces the main file's entry
/// with the same prefix, so it must carry the base mirrors and flags too).
pub fn render_dropin(entries: &[Registry], header: &str) -> String {
    let mut doc = DocumentMut::new();
    let mut aot = ArrayOfTables::new();
    for r in entries {
        let mut t = registry_table(r);
        t.decor_mut().set_suffix("");
        if let Some(ms) = t.get_mut("mirror").and_then(Item::as_array_of_tables_mut) {
            for m in ms.iter_mut() {
                m.decor_mut().set_suffix("");
            }
        }
        aot.push(t);
    }
    if !aot.is_empty() {
        doc.insert("registry", Item::ArrayOfTables(aot));
    }
    format!("{header}{doc}")
}

/// Put the administrator's own mirrors found inside managed tables back: into the new managed
/// table of the same scope (after the agent's mirrors, without a marker), or into an unmanaged
/// entry for that scope when the policies no longer produce one. Returns what was done, for
/// warnings.
pub fn keep_admin_mirrors(doc: &mut DocumentMut, mirrors: Vec<(String, Table)>) -> Vec<String> {
    let mut done = Vec::new();
    if mirrors.is_empty() {
        return done;
    }
    if doc.get("registry").is_none() {
        doc.insert("registry", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let Some(aot) = doc
        .get_mut("registry")
        .and_then(Item::as_array_of_tables_mut)
    else {
        return done;
    };
    // Collected bottom-up: restore file order.
    for (scope, mirror) in mirrors.into_iter().rev() {
        let loc = mirror
            .get("location")
            .and_then(|i| i.as_str())
            .unwrap_or("")
            .to_string();
        let idx = aot
            .iter()
            .position(|t| marked(t.decor()) && scope_of(t) == scope);
        let idx = match idx {
            Some(i) => {
                done.push(format!(
                    "registry {scope:?}: mirror {loc:?} added by hand inside a managed entry; kept"
                ));
                i
            }
            None => {
                aot.push(unmanaged_entry(&scope));
                done.push(format!("registry {scope:?}: mirror {loc:?} added by hand inside a managed entry that is no longer managed; kept as an unmanaged entry"));
                aot.len() - 1
            }
        };
        if let Some(t) = aot.get_mut(idx) {
            if t.get("mirror").is_none() {
                t.insert("mirror", Item::ArrayOfTables(ArrayOfTables::new()));
            }
            if let Some(ms) = t.get_mut("mirror").and_then(Item::as_array_of_tables_mut) {
                // A fresh table (no document position of its own), so it prints under its new
                // parent; keys keep their formatting and comments.
                let mut fresh = Table::new();
                *fresh.decor_mut() = mirror.decor().clone();
                for (k, v) in mirror.iter() {
                    match mirror.key(k) {
                        Some(key) => fresh.insert_formatted(key, v.clone()),
                        None => fresh.insert(k, v.clone()),
                    };
                }
                ms.push(fresh);
            }
        }
    }
    done
}

/// Hand edits of agent keys inside managed tables that the new render replaced.
pub fn replaced_agent_values(
    doc: &DocumentMut,
    before: &[(String, String, String)],
) -> Vec<String> {
    let mut out = Vec::new();
    let Some(aot) = doc.get("registry").and_then(Item::as_array_of_tables) else {
        return out;
    };
    for (scope, key, old) in before {
        let now = aot
            .iter()
            .find(|t| marked(t.decor()) && scope_of(t) == *scope)
            .and_then(|t| t.get(key))
            .and_then(|i| i.as_value())
            .map(|v| v.clone().decorated("", "").to_string())
            .unwrap_or_else(|| "false".into());
        if &now != old {
            out.push(format!(
                "registry {scope:?}: {key} = {old} was set by hand inside a managed entry; the policies decide it ({key} = {now}) — set it on your own [[registry]] or in Image/cluster"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Registry> {
        let mirror = |l: &str, insecure: bool, pull: &str| Mirror {
            location: l.into(),
            insecure,
            pull_from_mirror: pull.into(),
        };
        vec![
            Registry {
                location: "quay.io/ns".into(),
                mirrors: vec![
                    mirror("mirror.local/ns", false, "digest-only"),
                    mirror("cache.local:5000/ns", true, "digest-only"),
                ],
                ..Registry::default()
            },
            Registry {
                prefix: "*.example.com".into(),
                blocked: true,
                ..Registry::default()
            },
            Registry {
                location: "registry.example.org".into(),
                insecure: true,
                mirror_by_digest_only: true,
                mirrors: vec![mirror("m.example.net", false, "tag-only")],
                ..Registry::default()
            },
        ]
    }

    /// The new entries written as text are byte for byte the tables toml_edit writes, wherever
    /// the base puts them: after other tables, before tables that follow the registries, as the
    /// first tables of an empty or blank document (the fallback), next to an administrator's
    /// mirror added to an entry.
    #[test]
    fn new_entries_as_text_are_what_toml_edit_writes() {
        let bases = [
            "",
            "\n\n",
            "# only a comment\n",
            "unqualified-search-registries = [\"docker.io\"]\n",
            "[[registry]]\nlocation = \"site.example.org\"\n\n[aliases]\nubi = \"registry.access.redhat.com/ubi8\"\n",
            "[aliases]\nubi = \"registry.access.redhat.com/ubi8\"\n\n[[registry]]\nlocation = \"site.example.org\" # site\n[[registry.mirror]]\nlocation = \"cache.site\"\n# trailing comment\n",
            "[[registry]]\nlocation = \"quay.io/other\"\n",
        ];
        for base_text in bases {
            let base: Vec<Registry> = crate::core::mirrors::containers::decode("b", base_text)
                .unwrap()
                .registries
                .into_iter()
                .map(|r| r.registry)
                .collect();
            let mut rendered = base.clone();
            if let Some(first) = rendered.first_mut() {
                first.mirrors.push(Mirror {
                    location: "added.example.net".into(),
                    insecure: false,
                    pull_from_mirror: String::new(),
                });
            }
            rendered.extend(entries());
            let mut tables: DocumentMut = base_text.parse().unwrap();
            apply_changes(&mut tables, "b", &base, &rendered, false).unwrap();
            let mut text: DocumentMut = base_text.parse().unwrap();
            apply_changes(&mut text, "b", &base, &rendered, true).unwrap();
            assert_eq!(
                serialize_with_new_entries(&mut text, &rendered[base.len()..]),
                tables.to_string(),
                "base {base_text:?}"
            );
        }
    }

    #[test]
    fn an_administrators_copy_of_the_stand_in_comment_is_noticed() {
        let base_text = format!("[[registry]]{PLACEHOLDER}\nlocation = \"x.example\"\n");
        assert!(has_placeholder(&base_text));
        assert!(!has_placeholder(
            "[[registry]] # rhel-node-agent:managed v1\n"
        ));
    }
}
