//! registries.conf as containers/image (podman, skopeo, CRI-O) loads it: decoding with type checks,
//! the v1/v2 rules, `postProcessRegistries`, short-name aliases, drop-in merging (registries-spec §8).
//!
//! The agent must never install a file these rules reject — a rejected registries.conf breaks every
//! pull on the node — so every rendered document passes through [`load`] before it is written, and
//! `mirrors effective`/`check`/`verify` are built on the same loader.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use toml_edit::{ImDocument, Item, Table, Value};

use super::model::{Mirror, Registry};

/// A containers/image rejection or a decoding error, with the file, the entry and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {what}{}", line.map(|l| format!(":{l}")).unwrap_or_default(), if message.is_empty() { String::new() } else { format!(": {message}") })]
pub struct LoadError {
    /// The file being loaded.
    pub file: String,
    /// 1-based line of the offending entry or key, when known.
    pub line: Option<usize>,
    /// The entry and key, e.g. `registry[3] (prefix "quay.io").mirror[0].pull-from-mirror`.
    pub what: String,
    /// containers/image's own message for the rejection (empty for pure syntax errors).
    pub message: String,
}

/// One `[[registry]]` as decoded, with where it is in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedRegistry {
    /// The decoded entry (location/prefix after containers/image normalisation: trailing `/`
    /// stripped, prefix defaulted to location).
    pub registry: Registry,
    /// Registry-level `pull-from-mirror` (always an error when set; kept for messages).
    pub line: Option<usize>,
    /// The file the entry was read from.
    pub file: String,
}

/// A decoded and post-processed registries.conf (one file: the main file or one drop-in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedConf {
    /// The file name, for messages.
    pub file: String,
    /// Entries in file order (not yet de-duplicated).
    pub registries: Vec<LoadedRegistry>,
    /// `unqualified-search-registries`; `None` when absent.
    pub unqualified_search_registries: Option<Vec<String>>,
    /// `credential-helpers`; `None` when absent.
    pub credential_helpers: Option<Vec<String>>,
    /// `short-name-mode`; empty when absent.
    pub short_name_mode: String,
    /// `additional-layer-store-auth-helper`; empty when absent.
    pub additional_layer_store_auth_helper: String,
    /// `[aliases]` in file order; `None` when absent.
    pub aliases: Option<Vec<(String, String)>>,
    /// The file was in the v1 format (`[registries.search]` …) and was converted.
    pub was_v1: bool,
    /// Keys containers/image ignores (typos!): path and line. Reported, never fatal.
    pub unknown_keys: Vec<(String, Option<usize>)>,
}

/// Byte offsets of every newline, so a span's line is a binary search (counting newlines per key
/// made decoding quadratic in the file size).
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        Lines(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }
    fn line_of(&self, span: Option<std::ops::Range<usize>>) -> Option<usize> {
        span.map(|s| self.0.partition_point(|&nl| nl < s.start) + 1)
    }
}

struct Ctx<'a> {
    file: &'a str,
    lines: Lines,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: Option<std::ops::Range<usize>>,
        what: impl Into<String>,
        message: impl Into<String>,
    ) -> LoadError {
        LoadError {
            file: self.file.to_string(),
            line: self.lines.line_of(span),
            what: what.into(),
            message: message.into(),
        }
    }

    fn type_err(&self, item: &Item, path: &str, want: &str) -> LoadError {
        self.err(
            item.span(),
            path,
            format!("expected {want}, found {}", describe(item)),
        )
    }

    fn string(&self, item: &Item, path: &str) -> Result<String, LoadError> {
        match item.as_str() {
            Some(s) => Ok(s.to_string()),
            None => Err(self.type_err(item, path, "a string")),
        }
    }

    fn bool(&self, item: &Item, path: &str) -> Result<bool, LoadError> {
        match item.as_bool() {
            Some(b) => Ok(b),
            None => Err(self.type_err(item, path, "a boolean")),
        }
    }

    fn strings(&self, item: &Item, path: &str) -> Result<Vec<String>, LoadError> {
        let arr = item
            .as_array()
            .ok_or_else(|| self.type_err(item, path, "an array of strings"))?;
        arr.iter()
            .enumerate()
            .map(|(i, v)| match v.as_str() {
                Some(s) => Ok(s.to_string()),
                None => Err(self.err(
                    v.span(),
                    format!("{path}[{i}]"),
                    format!("expected a string, found {}", describe_value(v)),
                )),
            })
            .collect()
    }
}

fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => describe_value(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

fn describe_value(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "an inline table",
    }
}

/// A table-like view over `[table]` and `{inline = "table"}` alike.
enum TableRef<'a> {
    Table(&'a Table),
    Inline(&'a toml_edit::InlineTable),
}

impl<'a> TableRef<'a> {
    fn iter(&self) -> Vec<(&'a str, Item)> {
        match self {
            TableRef::Table(t) => t.iter().map(|(k, v)| (k, v.clone())).collect(),
            TableRef::Inline(t) => t.iter().map(|(k, v)| (k, Item::Value(v.clone()))).collect(),
        }
    }
    fn span(&self) -> Option<std::ops::Range<usize>> {
        match self {
            TableRef::Table(t) => t.span(),
            TableRef::Inline(t) => t.span(),
        }
    }
}

/// The list of tables under `key` (`[[key]]` or `key = [{...}]`), or a type error.
fn table_list<'a>(
    ctx: &Ctx<'_>,
    item: &'a Item,
    path: &str,
) -> Result<Vec<TableRef<'a>>, LoadError> {
    match item {
        Item::ArrayOfTables(a) => Ok(a.iter().map(TableRef::Table).collect()),
        Item::Value(Value::Array(arr)) => arr
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::InlineTable(t) => Ok(TableRef::Inline(t)),
                other => Err(ctx.err(
                    other.span(),
                    format!("{path}[{i}]"),
                    format!("expected a table, found {}", describe_value(other)),
                )),
            })
            .collect(),
        other => Err(ctx.type_err(other, path, "an array of tables")),
    }
}

/// Human name of an entry for messages: `registry[2] ("quay.io/ns")`.
pub fn entry_name(index: usize, scope: &str) -> String {
    format!("registry[{index}] ({scope:?})")
}

/// Decode `text` the way containers/image's `loadConfigFile` does (without post-processing).
pub fn decode(file: &str, text: &str) -> Result<LoadedConf, LoadError> {
    let ctx = Ctx {
        file,
        lines: Lines::new(text),
    };
    let doc = ImDocument::parse(text).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        LoadError {
            file: file.to_string(),
            line: ctx.lines.line_of(e.span()),
            what: "TOML syntax error".into(),
            message: msg,
        }
    })?;
    let mut conf = LoadedConf {
        file: file.to_string(),
        ..LoadedConf::default()
    };
    // containers/image `loadConfigFile` uses `hasSetField`: a key that is present counts as set,
    // even an empty list (`registries = []`), which decodes to a non-nil slice.
    let mut v1_set = false;
    let mut registry_present = false;
    let mut v1 = (
        None::<Vec<String>>,
        None::<Vec<String>>,
        None::<Vec<String>>,
    );
    for (key, item) in doc.iter() {
        match key {
            "registry" => {
                registry_present = true;
                for (i, t) in table_list(&ctx, item, "registry")?.into_iter().enumerate() {
                    conf.registries
                        .push(decode_registry(&ctx, &t, i, &mut conf.unknown_keys)?);
                }
            }
            "unqualified-search-registries" => {
                conf.unqualified_search_registries = Some(ctx.strings(item, key)?);
            }
            "credential-helpers" => conf.credential_helpers = Some(ctx.strings(item, key)?),
            "short-name-mode" => conf.short_name_mode = ctx.string(item, key)?,
            "additional-layer-store-auth-helper" => {
                conf.additional_layer_store_auth_helper = ctx.string(item, key)?
            }
            "aliases" => {
                let t = match item {
                    Item::Table(t) => TableRef::Table(t),
                    Item::Value(Value::InlineTable(t)) => TableRef::Inline(t),
                    other => return Err(ctx.type_err(other, "aliases", "a table")),
                };
                let mut aliases = Vec::new();
                for (k, v) in t.iter() {
                    aliases.push((k.to_string(), ctx.string(&v, &format!("aliases.{k}"))?));
                }
                conf.aliases = Some(aliases);
            }
            "registries" => {
                let t = match item {
                    Item::Table(t) => TableRef::Table(t),
                    Item::Value(Value::InlineTable(t)) => TableRef::Inline(t),
                    other => return Err(ctx.type_err(other, "registries", "a table (v1 format)")),
                };
                for (k, v) in t.iter() {
                    let sub = match &v {
                        Item::Table(t) => TableRef::Table(t),
                        Item::Value(Value::InlineTable(t)) => TableRef::Inline(t),
                        other => {
                            return Err(ctx.type_err(other, &format!("registries.{k}"), "a table"))
                        }
                    };
                    let mut list = None;
                    for (kk, vv) in sub.iter() {
                        if kk == "registries" {
                            list = Some(ctx.strings(&vv, &format!("registries.{k}.registries"))?);
                        } else {
                            conf.unknown_keys.push((
                                format!("registries.{k}.{kk}"),
                                ctx.lines.line_of(vv.span()),
                            ));
                        }
                    }
                    match k {
                        "search" => v1.0 = list,
                        "insecure" => v1.1 = list,
                        "block" => v1.2 = list,
                        _ => conf
                            .unknown_keys
                            .push((format!("registries.{k}"), ctx.lines.line_of(sub.span()))),
                    }
                }
                v1_set = [&v1.0, &v1.1, &v1.2].iter().any(|l| l.is_some());
            }
            other => conf
                .unknown_keys
                .push((other.to_string(), ctx.lines.line_of(item.span()))),
        }
    }
    if v1_set {
        let v2_set = registry_present
            || conf.unqualified_search_registries.is_some()
            || conf.credential_helpers.is_some()
            || !conf.short_name_mode.is_empty()
            || !conf.additional_layer_store_auth_helper.is_empty()
            || conf.aliases.is_some();
        if v2_set {
            return Err(ctx.err(
                None,
                "registries",
                "mixing sysregistry v1/v2 is not supported",
            ));
        }
        conf.was_v1 = true;
        convert_v1(&mut conf, v1.0, v1.1, v1.2, &ctx)?;
    }
    Ok(conf)
}

fn convert_v1(
    conf: &mut LoadedConf,
    search: Option<Vec<String>>,
    insecure: Option<Vec<String>>,
    block: Option<Vec<String>>,
    ctx: &Ctx<'_>,
) -> Result<(), LoadError> {
    let mut order: Vec<String> = Vec::new();
    let mut map: BTreeMap<String, Registry> = BTreeMap::new();
    for (list, is_block) in [(block, true), (insecure, false)] {
        for (i, loc) in list.into_iter().flatten().enumerate() {
            let what = format!(
                "registries.{}.registries[{i}]",
                if is_block { "block" } else { "insecure" }
            );
            let loc = parse_location(&loc).map_err(|m| ctx.err(None, what, m))?;
            let reg = map.entry(loc.clone()).or_insert_with(|| {
                order.push(loc.clone());
                Registry {
                    prefix: loc.clone(),
                    location: loc.clone(),
                    ..Registry::default()
                }
            });
            if is_block {
                reg.blocked = true;
            } else {
                reg.insecure = true;
            }
        }
    }
    conf.unqualified_search_registries = search;
    conf.registries = order
        .into_iter()
        .map(|l| LoadedRegistry {
            registry: map.remove(&l).unwrap_or_default(),
            line: None,
            file: conf.file.clone(),
        })
        .collect();
    Ok(())
}

fn decode_registry(
    ctx: &Ctx<'_>,
    t: &TableRef<'_>,
    index: usize,
    unknown: &mut Vec<(String, Option<usize>)>,
) -> Result<LoadedRegistry, LoadError> {
    let mut r = Registry::default();
    let mut reg_pfm = String::new();
    let path = format!("registry[{index}]");
    let line = ctx.lines.line_of(t.span());
    for (k, v) in t.iter() {
        let kp = format!("{path}.{k}");
        match k {
            "prefix" => r.prefix = ctx.string(&v, &kp)?,
            "location" => r.location = ctx.string(&v, &kp)?,
            "insecure" => r.insecure = ctx.bool(&v, &kp)?,
            "blocked" => r.blocked = ctx.bool(&v, &kp)?,
            "mirror-by-digest-only" => r.mirror_by_digest_only = ctx.bool(&v, &kp)?,
            "pull-from-mirror" => reg_pfm = ctx.string(&v, &kp)?,
            "proxy" => {
                ctx.string(&v, &kp)?;
            }
            "mirror" => {
                for (j, mt) in table_list(ctx, &v, &kp)?.into_iter().enumerate() {
                    let mut m = Mirror::default();
                    for (mk, mv) in mt.iter() {
                        let mp = format!("{kp}[{j}].{mk}");
                        match mk {
                            "location" => m.location = ctx.string(&mv, &mp)?,
                            "insecure" => m.insecure = ctx.bool(&mv, &mp)?,
                            "pull-from-mirror" => m.pull_from_mirror = ctx.string(&mv, &mp)?,
                            "proxy" => {
                                ctx.string(&mv, &mp)?;
                            }
                            _ => unknown.push((mp, ctx.lines.line_of(mv.span()))),
                        }
                    }
                    r.mirrors.push(m);
                }
            }
            _ => unknown.push((kp, ctx.lines.line_of(v.span()))),
        }
    }
    if !reg_pfm.is_empty() {
        let scope = if r.prefix.is_empty() {
            r.location.clone()
        } else {
            r.prefix.clone()
        };
        return Err(ctx.err(
            t.span(),
            format!("{}.pull-from-mirror", entry_name(index, &scope)),
            format!("pull-from-mirror must not be set for a non-mirror registry {scope:?}"),
        ));
    }
    Ok(LoadedRegistry {
        registry: r,
        line,
        file: ctx.file.to_string(),
    })
}

/// containers/image `parseLocation`: strip trailing `/`, refuse URI schemes.
pub fn parse_location(input: &str) -> Result<String, String> {
    let trimmed = input.trim_end_matches('/');
    if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        return Err(format!(
            "invalid location '{input}': URI schemes are not supported"
        ));
    }
    Ok(trimmed.to_string())
}

fn domain_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let comp = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        Regex::new(&format!(
            r"^(?:{comp}(?:\.{comp})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$"
        ))
        .expect("domain regex")
    })
}

/// A docker reference split into its parts (enough of distribution/reference for alias checks).
struct ParsedRef {
    domain: String,
    tagged: bool,
    digested: bool,
}

fn parse_reference(s: &str) -> Option<ParsedRef> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        let comp = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain = format!(r"(?:{comp}(?:\.{comp})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?");
        let path = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*";
        Regex::new(&format!(
            r"^(?:({domain})/)?({path}(?:/{path})*)(?::([\w][\w.-]{{0,127}}))?(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}}))?$"
        ))
        .expect("reference regex")
    });
    let c = re.captures(s)?;
    let name_len = c.get(1).map(|m| m.as_str().len() + 1).unwrap_or(0)
        + c.get(2).map(|m| m.as_str().len()).unwrap_or(0);
    if name_len > 255 {
        return None;
    }
    Some(ParsedRef {
        domain: c.get(1).map(|m| m.as_str().to_string()).unwrap_or_default(),
        tagged: c.get(3).is_some(),
        digested: c.get(4).is_some(),
    })
}

fn has_registry(domain: &str) -> bool {
    domain.contains(['.', ':']) || domain == "localhost"
}

/// containers/image short-name alias validation (`shortnames.go`).
fn validate_alias(name: &str, value: &str) -> Result<(), String> {
    let r = parse_reference(name).ok_or_else(|| format!("cannot parse short name: {name:?}"))?;
    if r.digested {
        return Err(format!(
            "invalid short name {name:?}: must not contain digest"
        ));
    }
    if r.tagged {
        return Err(format!("invalid short name {name:?}: must not contain tag"));
    }
    if has_registry(&r.domain) {
        return Err(format!(
            "invalid short name {name:?}: must not contain registry"
        ));
    }
    if value.is_empty() {
        return Ok(());
    }
    let v = parse_reference(value)
        .ok_or_else(|| format!("parsing alias {value:?}: invalid reference format"))?;
    if v.digested {
        return Err(format!("invalid alias {value:?}: must not contain digest"));
    }
    if v.tagged {
        return Err(format!("invalid alias {value:?}: must not contain tag"));
    }
    if !has_registry(&v.domain) {
        return Err(format!(
            "invalid alias {value:?}: must contain registry and repository"
        ));
    }
    Ok(())
}

/// containers/image `postProcessRegistries` plus the other checks of `loadConfigFile`, in its order.
/// Normalises locations and prefixes in place; the first rejection is returned.
pub fn post_process(conf: &mut LoadedConf) -> Result<(), LoadError> {
    let file = conf.file.clone();
    let at = |line: Option<usize>, what: String, message: String| LoadError {
        file: file.clone(),
        line,
        what,
        message,
    };
    for (i, lr) in conf.registries.iter_mut().enumerate() {
        let r = &mut lr.registry;
        let name = entry_name(
            i,
            if r.prefix.is_empty() {
                &r.location
            } else {
                &r.prefix
            },
        );
        r.location =
            parse_location(&r.location).map_err(|m| at(lr.line, format!("{name}.location"), m))?;
        if r.prefix.is_empty() {
            if r.location.is_empty() {
                return Err(at(
                    lr.line,
                    name,
                    "invalid condition: both location and prefix are unset".into(),
                ));
            }
            r.prefix = r.location.clone();
        } else {
            r.prefix =
                parse_location(&r.prefix).map_err(|m| at(lr.line, format!("{name}.prefix"), m))?;
            if !r.prefix.starts_with("*.") && r.location.is_empty() {
                return Err(at(lr.line, name, "invalid condition: location is unset and prefix is not in the format: *.example.com".into()));
            }
        }
        for (j, m) in r.mirrors.iter_mut().enumerate() {
            let mname = format!("{name}.mirror[{j}]");
            m.location = parse_location(&m.location)
                .map_err(|e| at(lr.line, format!("{mname}.location"), e))?;
            if m.location.is_empty() {
                return Err(at(
                    lr.line,
                    mname,
                    "invalid condition: mirror location is unset".into(),
                ));
            }
            if r.mirror_by_digest_only && !m.pull_from_mirror.is_empty() {
                return Err(at(
                    lr.line,
                    format!("{mname}.pull-from-mirror"),
                    format!(
                        "cannot set mirror usage mirror-by-digest-only for the registry ({:?}) and pull-from-mirror for per-mirror ({:?}) at the same time",
                        r.prefix, m.location
                    ),
                ));
            }
            if !matches!(
                m.pull_from_mirror.as_str(),
                "" | "all" | "digest-only" | "tag-only"
            ) {
                return Err(at(
                    lr.line,
                    format!("{mname}.pull-from-mirror"),
                    format!(
                        "unsupported pull-from-mirror value {:?} for mirror {:?}",
                        m.pull_from_mirror, m.location
                    ),
                ));
            }
        }
    }
    // Conflicting flags between entries with the same location (or prefix when location is empty).
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, lr) in conf.registries.iter().enumerate() {
        let r = &lr.registry;
        by_key
            .entry(if r.location.is_empty() {
                &r.prefix
            } else {
                &r.location
            })
            .or_default()
            .push(i);
    }
    for (i, lr) in conf.registries.iter().enumerate() {
        let r = &lr.registry;
        let key = if r.location.is_empty() {
            &r.prefix
        } else {
            &r.location
        };
        for &j in &by_key[key.as_str()] {
            let o = &conf.registries[j].registry;
            let name = entry_name(i, key);
            if r.insecure != o.insecure {
                return Err(at(lr.line, format!("{name}.insecure"), format!("registry '{}' is defined multiple times with conflicting 'insecure' setting", r.location)));
            }
            if r.blocked != o.blocked {
                return Err(at(lr.line, format!("{name}.blocked"), format!("registry '{}' is defined multiple times with conflicting 'blocked' setting", r.location)));
            }
        }
    }
    if let Some(list) = &mut conf.unqualified_search_registries {
        for (i, entry) in list.iter_mut().enumerate() {
            let what = format!("unqualified-search-registries[{i}]");
            let reg = parse_location(entry).map_err(|m| at(None, what.clone(), m))?;
            if !domain_regex().is_match(&reg) {
                return Err(at(
                    None,
                    what,
                    format!("Invalid unqualified-search-registries entry {reg:?}"),
                ));
            }
            *entry = reg;
        }
    }
    if !conf.short_name_mode.is_empty()
        && !matches!(
            conf.short_name_mode.as_str(),
            "disabled" | "enforcing" | "permissive"
        )
    {
        return Err(at(
            None,
            "short-name-mode".into(),
            format!("invalid short-name mode: {:?}", conf.short_name_mode),
        ));
    }
    for (i, lr) in conf.registries.iter().enumerate() {
        let p = &lr.registry.prefix;
        if p.starts_with("*.") && p.contains(['/', '@', ':']) {
            return Err(at(
                lr.line,
                format!("{}.prefix", entry_name(i, p)),
                format!("Wildcarded prefix should be in the format: *.example.com. Current prefix {p:?} is incorrectly formatted"),
            ));
        }
    }
    for (name, value) in conf.aliases.iter().flatten() {
        validate_alias(name, value).map_err(|m| {
            at(
                None,
                format!("aliases.{name}"),
                format!("validating short-name aliases: {m}"),
            )
        })?;
    }
    Ok(())
}

/// Decode and post-process one file: exactly what containers/image accepts or rejects.
pub fn load(file: &str, text: &str) -> Result<LoadedConf, LoadError> {
    let mut conf = decode(file, text)?;
    post_process(&mut conf)?;
    Ok(conf)
}

/// Load a drop-in: like [`load`], but the v1 format is refused (`registry must be in v2 format but is in v1`).
pub fn load_dropin(file: &str, text: &str) -> Result<LoadedConf, LoadError> {
    let mut conf = decode(file, text)?;
    if conf.was_v1 {
        return Err(LoadError {
            file: file.to_string(),
            line: None,
            what: "registries".into(),
            message: "registry must be in v2 format but is in v1".into(),
        });
    }
    post_process(&mut conf)?;
    Ok(conf)
}

/// The configuration containers/image ends up with after the main file and its drop-ins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectiveConf {
    /// Entries keyed by prefix (sorted), each with the file that defined it.
    pub registries: Vec<LoadedRegistry>,
    /// `unqualified-search-registries` and the file it came from.
    pub unqualified_search_registries: Option<(Vec<String>, String)>,
    /// `credential-helpers`.
    pub credential_helpers: Option<Vec<String>>,
    /// `short-name-mode` (empty = permissive).
    pub short_name_mode: String,
    /// `additional-layer-store-auth-helper`.
    pub additional_layer_store_auth_helper: String,
    /// Merged aliases.
    pub aliases: BTreeMap<String, String>,
    /// Duplicate prefixes found (file, prefix): reported as warnings.
    pub duplicates: Vec<(String, String)>,
    /// Whether any drop-in was merged (changes which of duplicate entries wins, spec §8).
    pub had_dropins: bool,
}

impl EffectiveConf {
    /// The entry containers/image uses for `reference` (longest matching prefix; spec §5), if any.
    pub fn find(&self, reference: &str) -> Option<&LoadedRegistry> {
        let mut best: Option<&LoadedRegistry> = None;
        for r in &self.registries {
            if ref_matches_prefix(reference, &r.registry.prefix) {
                let better = best
                    .map(|b| r.registry.prefix.len() > b.registry.prefix.len())
                    .unwrap_or(true);
                if better {
                    best = Some(r);
                }
            }
        }
        best
    }
}

/// containers/image `refMatchingPrefix`: does `reference` fall under `prefix`?
pub fn ref_matches_prefix(reference: &str, prefix: &str) -> bool {
    if let Some(domain) = prefix.strip_prefix('*') {
        let host = reference.split('/').next().unwrap_or(reference);
        let host = host.split(':').next().unwrap_or(host);
        return domain.starts_with('.') && host.ends_with(domain);
    }
    match reference.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => rest.starts_with(['/', ':', '@']),
        None => false,
    }
}

/// Merge the main file and drop-ins (already loaded, in lexical order) as containers/image does.
pub fn merge_effective(main: LoadedConf, dropins: Vec<LoadedConf>) -> EffectiveConf {
    let had_dropins = !dropins.is_empty();
    let mut eff = EffectiveConf {
        had_dropins,
        ..EffectiveConf::default()
    };
    let mut by_prefix: BTreeMap<String, LoadedRegistry> = BTreeMap::new();
    for conf in std::iter::once(main).chain(dropins) {
        let mut seen: BTreeMap<String, ()> = BTreeMap::new();
        for lr in conf.registries {
            let p = lr.registry.prefix.clone();
            if seen.insert(p.clone(), ()).is_some() {
                eff.duplicates.push((conf.file.clone(), p.clone()));
                // Main file alone: the first duplicate is the one a lookup finds. With drop-ins the
                // entries are rebuilt into a map and the last one wins.
                if !had_dropins {
                    continue;
                }
            }
            by_prefix.insert(p, lr);
        }
        if let Some(list) = conf.unqualified_search_registries {
            eff.unqualified_search_registries = Some((list, conf.file.clone()));
        }
        if conf.credential_helpers.is_some() {
            eff.credential_helpers = conf.credential_helpers;
        }
        if !conf.short_name_mode.is_empty() {
            eff.short_name_mode = conf.short_name_mode;
        }
        if !conf.additional_layer_store_auth_helper.is_empty() {
            eff.additional_layer_store_auth_helper = conf.additional_layer_store_auth_helper;
        }
        for (k, v) in conf.aliases.into_iter().flatten() {
            if v.is_empty() {
                eff.aliases.remove(&k);
            } else {
                eff.aliases.insert(k, v);
            }
        }
    }
    eff.registries = by_prefix.into_values().collect();
    eff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        load("r.conf", text).unwrap_err().to_string()
    }

    #[test]
    fn rejections_carry_containers_messages() {
        assert!(err("[[registry]]\nlocation = \"http://a.com\"\n")
            .contains("invalid location 'http://a.com': URI schemes are not supported"));
        assert!(err("[[registry]]\ninsecure = true\n")
            .contains("invalid condition: both location and prefix are unset"));
        assert!(err("[[registry]]\nprefix = \"a.com\"\n")
            .contains("location is unset and prefix is not in the format"));
        assert!(
            err("[[registry]]\nlocation = \"a.com\"\n[[registry.mirror]]\ninsecure = true\n")
                .contains("invalid condition: mirror location is unset")
        );
        assert!(
            err("[[registry]]\nlocation = \"a.com\"\npull-from-mirror = \"all\"\n")
                .contains("pull-from-mirror must not be set for a non-mirror registry \"a.com\"")
        );
        assert!(err("[[registry]]\nlocation = \"a.com\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"bogus\"\n").contains("unsupported pull-from-mirror value \"bogus\" for mirror \"m\""));
        assert!(err("[[registry]]\nlocation = \"a.com\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"all\"\n").contains("cannot set mirror usage mirror-by-digest-only"));
        assert!(err("[[registry]]\nlocation = \"a.com\"\ninsecure = true\n[[registry]]\nlocation = \"a.com\"\n").contains("registry 'a.com' is defined multiple times with conflicting 'insecure' setting"));
        assert!(err("[[registry]]\nprefix = \"*.a.com/x\"\n")
            .contains("Wildcarded prefix should be in the format"));
        assert!(err("unqualified-search-registries = [\"a.com/ns\"]\n")
            .contains("Invalid unqualified-search-registries entry \"a.com/ns\""));
        assert!(err("short-name-mode = \"loud\"\n").contains("invalid short-name mode: \"loud\""));
        assert!(err(
            "[registries.search]\nregistries = [\"a.com\"]\n[[registry]]\nlocation = \"b.com\"\n"
        )
        .contains("mixing sysregistry v1/v2 is not supported"));
        assert!(err("[aliases]\n\"a.com/x\" = \"b.com/x\"\n").contains("must not contain registry"));
        assert!(err("[aliases]\nx = \"b.com/x:1\"\n").contains("must not contain tag"));
        assert!(err("[aliases]\nx = \"x/y\"\n").contains("must contain registry and repository"));
        assert!(err("[[registry]]\nlocation = 1\n")
            .contains("registry[0].location: expected a string, found an integer"));
        assert!(err("a = [\n").contains("TOML syntax error"));
    }

    #[test]
    fn accepts_valid_files_and_reports_unknown_keys() {
        let c = load("r.conf", "unqualified-search-registries = [\"registry.access.redhat.com\", \"docker.io\"]\n[[registry]]\nlocation = \"a.com/\"\nmirror-by-digest-onyl = true\n[aliases]\nubi = \"registry.access.redhat.com/ubi8\"\n").unwrap();
        assert_eq!(c.registries[0].registry.location, "a.com");
        assert_eq!(c.registries[0].registry.prefix, "a.com");
        assert_eq!(c.unknown_keys.len(), 1);
    }

    #[test]
    fn v1_is_converted_and_refused_in_dropins() {
        let c = load("r.conf", "[registries.search]\nregistries = [\"a.com\"]\n[registries.block]\nregistries = [\"b.com\"]\n").unwrap();
        assert!(c.was_v1);
        assert!(c.registries[0].registry.blocked);
        assert!(
            load_dropin("d.conf", "[registries.search]\nregistries = [\"a.com\"]\n")
                .unwrap_err()
                .to_string()
                .contains("registry must be in v2 format but is in v1")
        );
    }

    #[test]
    fn prefix_matching() {
        assert!(ref_matches_prefix("a.com/x/y", "a.com/x"));
        assert!(ref_matches_prefix("a.com/x:tag", "a.com/x"));
        assert!(ref_matches_prefix("a.com/x@sha256:1", "a.com/x"));
        assert!(!ref_matches_prefix("a.com/xy", "a.com/x"));
        assert!(ref_matches_prefix("b.a.com/x", "*.a.com"));
        assert!(!ref_matches_prefix("a.com/x", "*.a.com"));
    }
}
