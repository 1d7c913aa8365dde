//! Config layer: reading `config.toml` text into a [`Config`] and finding every problem of it in
//! one pass — TOML syntax, the schema (unknown keys, wrong types, missing keys) and the rules of
//! [`Config::validate`] — each once, located at the line it concerns, in line order.
//!
//! Syntax errors end the reading: what follows one cannot be trusted. Otherwise the sections are
//! read together and every `[[queues]]`, `[[agents]]`, `[[supervisors]]` and `[[api_keys]]`
//! entry on its own. A key that does not fit the schema is reported and left out (its default
//! applies), and the reading goes on; an entry that cannot be read at all (a required key
//! missing) is reported and left out. A rule involving something left out is not checked, so
//! no problem is reported about a value the file does not actually hold.

use std::collections::HashSet;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{
    AgentConfig, ApiKeyConfig, Config, ConfigError, Problem, QueueConfig, SupervisorConfig,
};

impl Config {
    /// Parses and validates a configuration from TOML text. On failure the error lists every
    /// problem of the text at once, in line order.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        read(s)
    }
}

/// Parses and validates `text`: the configuration, or every problem found.
fn read(text: &str) -> Result<Config, ConfigError> {
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let mut problems: Vec<Problem> = syntax
            .iter()
            .map(|e| place(text, e.span(), format!("not valid TOML: {}", e.message())))
            .collect();
        problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
        // After a syntax error the parser may stumble again on the same line: one per line.
        let mut lines = HashSet::new();
        problems.retain(|p| p.line.is_none() || lines.insert(p.line));
        return Err(ConfigError::Parse {
            path: None,
            problems,
        });
    }
    let root_span = root.span();
    let source = root.into_inner();

    let mut reader = Reader {
        text,
        problems: Vec::new(),
        left_out: Vec::new(),
    };
    let mut sections = source.clone();
    let lists: Vec<_> = LISTS
        .iter()
        .filter_map(|name| sections.remove_entry(*name).map(|(_, v)| (*name, v)))
        .collect();
    let mut config: Config = reader
        .read("", Spanned::new(root_span, DeValue::Table(sections)))
        .unwrap_or_default();
    let mut kept: Vec<(&str, Vec<usize>)> = Vec::new();
    for (name, value) in lists {
        let Some(entries) = reader.entries(name, value) else {
            continue;
        };
        let indexes = match name {
            "queues" => {
                let (list, indexes) = reader.read_list::<QueueConfig>(name, entries);
                config.queues = list;
                indexes
            }
            "agents" => {
                let (list, indexes) = reader.read_list::<AgentConfig>(name, entries);
                config.agents = list;
                indexes
            }
            "supervisors" => {
                let (list, indexes) = reader.read_list::<SupervisorConfig>(name, entries);
                config.supervisors = list;
                indexes
            }
            _ => {
                let (list, indexes) = reader.read_list::<ApiKeyConfig>(name, entries);
                config.api_keys = list;
                indexes
            }
        };
        kept.push((name, indexes));
    }
    for key in &mut config.api_keys {
        key.key_sha256.make_ascii_lowercase();
    }

    let schema_failed = !reader.problems.is_empty();
    for message in config.rule_problems() {
        let message = renumber(&message, &kept);
        if reader.left_out.iter().any(|p| mentions(&message, p)) {
            continue;
        }
        let line = locate(&source, &message).map(|offset| position(text, offset).0);
        reader.problems.push(Problem {
            line,
            column: None,
            message,
        });
    }
    if reader.problems.is_empty() {
        return Ok(config);
    }
    let mut problems = reader.problems;
    problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
    let mut seen = HashSet::new();
    problems.retain(|p| seen.insert((p.line, p.message.clone())));
    Err(if schema_failed {
        ConfigError::Parse {
            path: None,
            problems,
        }
    } else {
        ConfigError::Invalid {
            path: None,
            problems,
        }
    })
}

/// The arrays of tables, read entry by entry.
const LISTS: [&str; 4] = ["queues", "agents", "supervisors", "api_keys"];

struct Reader<'t> {
    text: &'t str,
    problems: Vec<Problem>,
    /// Key paths (and references) that were left out: rules that mention them are not checked.
    left_out: Vec<String>,
}

impl Reader<'_> {
    fn push(&mut self, span: Option<Range<usize>>, message: String) {
        self.problems.push(place(self.text, span, message));
    }

    /// Reads `value` as a `T`. Each schema error is reported, the key it points at left out,
    /// and the reading tried again; `None` when the value as a whole cannot be a `T`.
    fn read<T: DeserializeOwned>(
        &mut self,
        path: &str,
        mut value: Spanned<DeValue<'_>>,
    ) -> Option<T> {
        let mut taken: Vec<String> = Vec::new();
        // Each round removes one key, so this ends.
        loop {
            let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let span = error.span();
            let removed = span
                .as_ref()
                .and_then(|s| take_entry(&mut value, s.start, path));
            let at = removed.clone().unwrap_or_else(|| path.to_owned());
            // A required key missing only because it was left out above: already reported.
            let follows = error
                .message()
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
                .is_some_and(|field| taken.contains(&join(&at, field)));
            if !follows {
                let message = if at.is_empty() {
                    error.message().to_owned()
                } else {
                    format!("{at}: {}", error.message())
                };
                self.push(span.or(Some(value.span())), message);
            }
            self.left_out.push(at.clone());
            taken.push(at);
            // Nothing was taken out: the value as a whole cannot be a `T`.
            removed?;
        }
    }

    /// The entries of a `[[name]]` list, or `None` (reported) when `name` is not a list.
    fn entries<'i>(
        &mut self,
        name: &str,
        value: Spanned<DeValue<'i>>,
    ) -> Option<Vec<Spanned<DeValue<'i>>>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(entries) => Some(entries.into_iter().collect()),
            other => {
                self.push(
                    Some(span),
                    format!(
                        "{name}: expected [[{name}]] tables, found a {}",
                        other.type_str()
                    ),
                );
                self.left_out.push(name.to_owned());
                None
            }
        }
    }

    /// Reads every entry of a list on its own: the entries read, and their indexes in the file.
    fn read_list<T: DeserializeOwned>(
        &mut self,
        name: &str,
        entries: Vec<Spanned<DeValue<'_>>>,
    ) -> (Vec<T>, Vec<usize>) {
        let mut list = Vec::new();
        let mut indexes = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let id = entry
                .get_ref()
                .get("id")
                .and_then(|id| id.get_ref().as_str())
                .map(str::to_owned);
            match self.read::<T>(&format!("{name}[{i}]"), entry) {
                Some(t) => {
                    list.push(t);
                    indexes.push(i);
                }
                // References to an entry left out are not checked either.
                None if name == "queues" => self.left_out.push(match id {
                    Some(id) => format!("unknown queue \"{id}\""),
                    None => "unknown queue".to_owned(),
                }),
                None => {}
            }
        }
        (list, indexes)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Removes from the table `value` the deepest key whose key or value holds `offset`; returns
/// its path. `None` when the offset points at `value` itself (a missing key, a wrong type).
fn take_entry(value: &mut Spanned<DeValue<'_>>, offset: usize, path: &str) -> Option<String> {
    match value.get_mut() {
        DeValue::Table(table) => take_from(table, offset, path),
        _ => None,
    }
}

fn take_from(table: &mut DeTable<'_>, offset: usize, path: &str) -> Option<String> {
    let mut hit = None;
    for (key, value) in table.iter_mut() {
        let at = join(path, key.get_ref());
        if let Some(deeper) = take_entry(value, offset, &at) {
            return Some(deeper);
        }
        if hit.is_none() && (key.span().contains(&offset) || value.span().contains(&offset)) {
            hit = Some(key.get_ref().to_string());
        }
    }
    let key = hit?;
    table.remove(key.as_str());
    Some(join(path, &key))
}

/// Whether `message` names the key path `path` (not merely a longer one that starts with it).
fn mentions(message: &str, path: &str) -> bool {
    message.match_indices(path).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let after = message[at + path.len()..].chars().next();
        let part_of_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        !before.is_some_and(|c| part_of_name(c) || c == '.') && !after.is_some_and(part_of_name)
    })
}

/// Rewrites `list[k]` in a message about the entries read back to the entry's index in the
/// file (they differ when an entry before it was left out).
fn renumber(message: &str, kept: &[(&str, Vec<usize>)]) -> String {
    let mut out = message.to_owned();
    for (name, indexes) in kept {
        if indexes.iter().enumerate().all(|(k, i)| k == *i) {
            continue;
        }
        let prefix = format!("{name}[");
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(&prefix) {
            let (before, after) = rest.split_at(at + prefix.len());
            result.push_str(before);
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let original = after[..digits]
                .parse::<usize>()
                .ok()
                .filter(|_| after[digits..].starts_with(']'))
                .and_then(|k| indexes.get(k));
            match original {
                Some(i) => {
                    result.push_str(&i.to_string());
                    rest = &after[digits..];
                }
                None => rest = after,
            }
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// The byte offset of the key a rule's message is about: of the key paths it names outside
/// quotes, the one found deepest in the file (the first on a tie).
fn locate(source: &DeTable<'_>, message: &str) -> Option<usize> {
    let unquoted: String = message
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join(" ");
    let mut best: Option<(usize, usize)> = None;
    for token in unquoted.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ',' | ':')) {
        let is_path = token.starts_with(|c: char| c.is_ascii_lowercase())
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
        if !is_path {
            continue;
        }
        if let Some((depth, offset)) = resolve(source, token) {
            if best.is_none_or(|(d, _)| depth > d) {
                best = Some((depth, offset));
            }
        }
    }
    best.map(|(_, offset)| offset)
}

/// How many segments of `path` (`agents[1].queues`) the file holds, and where the last one is.
fn resolve(source: &DeTable<'_>, path: &str) -> Option<(usize, usize)> {
    let mut table = source;
    let mut found = None;
    let mut depth = 0;
    for segment in path.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.strip_suffix(']')?.parse::<usize>().ok()),
            None => (segment, None),
        };
        let Some((key, mut value)) = table.get_key_value(name) else {
            break;
        };
        depth += 1;
        found = Some((depth, key.span().start));
        if let Some(i) = index {
            let DeValue::Array(entries) = value.get_ref() else {
                break;
            };
            let Some(entry) = entries.get(i) else {
                break;
            };
            depth += 1;
            found = Some((depth, entry.span().start));
            value = entry;
        }
        let DeValue::Table(inner) = value.get_ref() else {
            break;
        };
        table = inner;
    }
    found
}

/// A problem at the start of `span` in `text`.
fn place(text: &str, span: Option<Range<usize>>, message: String) -> Problem {
    let (line, column) = match span {
        Some(s) => {
            let (line, column) = position(text, s.start);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    Problem {
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$azN2OVFtMnhacjh3THA0dA$WhLKbQr5TiCRoNgcjJhfVWsGYTl5m9l3YzigOK0b8yU";

    /// `(line, message)` of every problem `text` has (panics if it is valid).
    fn problems(text: &str) -> Vec<(Option<usize>, String)> {
        match read(text) {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(e) => e
                .located()
                .iter()
                .map(|p| (p.line, p.message.clone()))
                .collect(),
        }
    }

    fn lines_of(text: &str) -> Vec<usize> {
        problems(text).iter().map(|(l, _)| l.unwrap_or(0)).collect()
    }

    /// A file with a mistake of every kind: wrong types, unknown keys at every depth, a bad
    /// enum value, a missing required key, rule problems.
    fn many_mistakes() -> String {
        format!(
            "[server]\n\
             http_listen = \"localhost\"\n\
             \n\
             [resilience]\n\
             grace = \"1s\"\n\
             session_grace = \"0s\"\n\
             \n\
             [log]\n\
             format = \"xml\"\n\
             level = \"loud\"\n\
             \n\
             [[queues]]\n\
             id = \"support\"\n\
             name = \"Support\"\n\
             \n\
             [[queues]]\n\
             id = \"sales\"\n\
             name = \"Sales\"\n\
             channel = \"chat\"\n\
             offer_timeout = \"0s\"\n\
             \n\
             [[agents]]\n\
             id = \"alice\"\n\
             name = \"Alice\"\n\
             password_hash = \"{HASH}\"\n\
             sip_password = \"x\"\n\
             queues = [\"support\", \"sales\", \"nowhere\"]\n\
             capacity = {{ voice = \"one\", fax = 2 }}\n\
             \n\
             [serverr]\n\
             x = 1\n"
        )
    }

    #[test]
    fn every_problem_of_a_file_is_reported_in_one_pass_in_line_order() {
        let found = problems(&many_mistakes());
        let expected: [(usize, &str); 10] = [
            (2, "server.http_listen: invalid socket address syntax"),
            (5, "resilience.grace: unknown field `grace`"),
            (6, "resilience.session_grace must be greater than zero"),
            (9, "log.format: unknown variant `xml`"),
            (10, "log.level: \"loud\" is not a level"),
            (12, "queues[0]: missing field `channel`"),
            (20, "queues[1].offer_timeout must be greater than zero"),
            (27, "agents[0].queues: unknown queue \"nowhere\""),
            (28, "agents[0].capacity.voice: invalid type: string \"one\""),
            (28, "agents[0].capacity.fax: unknown field `fax`"),
        ];
        let mut rest = found.iter();
        for (line, start) in expected {
            assert!(
                rest.any(|(l, m)| *l == Some(line) && m.starts_with(start)),
                "no {start:?} at line {line} (in order) in {found:#?}"
            );
        }
        assert_eq!(
            found
                .last()
                .map(|(l, m)| (*l, m.starts_with("serverr: unknown field"))),
            Some((Some(30), true)),
            "{found:#?}"
        );
        assert_eq!(found.len(), 11, "{found:#?}");
    }

    #[test]
    fn problems_are_sorted_by_line_and_column_and_each_appears_once() {
        let lines = lines_of(&many_mistakes());
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
        let e = read(&many_mistakes()).unwrap_err();
        let located = e.located();
        let mut seen = HashSet::new();
        assert!(located.iter().all(|p| seen.insert(p.to_string())));
        let same_line: Vec<_> = located.iter().filter(|p| p.line == Some(28)).collect();
        assert!(same_line[0].column < same_line[1].column, "{same_line:?}");
    }

    #[test]
    fn the_error_text_lists_every_problem_with_its_line_one_per_line() {
        let e = read(&many_mistakes()).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }));
        let text = e.to_string();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("invalid configuration (11 problems):"));
        assert!(
            lines
                .clone()
                .next()
                .is_some_and(|l| l.starts_with("line 2, column 15: server.http_listen")),
            "{text}"
        );
        assert!(lines.all(|l| l.starts_with("line ")), "{text}");
    }

    #[test]
    fn a_rule_involving_a_key_that_could_not_be_read_is_not_checked() {
        // min_expires is left out (wrong type); the bounds rule would compare against its
        // default, not against what the file says.
        let found =
            problems("[sip]\nmin_expires = 5\nmax_expires = \"40s\"\ndefault_expires = \"50s\"\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].1.starts_with("sip.min_expires: invalid type"),
            "{found:#?}"
        );
    }

    #[test]
    fn references_to_an_entry_that_could_not_be_read_are_not_reported_as_unknown() {
        let text = format!(
            "[[queues]]\nid = \"support\"\nname = \"S\"\n\n\
             [[agents]]\nid = \"a\"\nname = \"A\"\npassword_hash = \"{HASH}\"\n\
             sip_password = \"x\"\nqueues = [\"support\"]\n"
        );
        let found = problems(&text);
        assert_eq!(
            found,
            [(Some(1), "queues[0]: missing field `channel`".to_owned())]
        );
    }

    #[test]
    fn entries_after_one_left_out_are_named_by_their_place_in_the_file() {
        let found = problems(
            "[[queues]]\nid = \"a\"\n\n\
             [[queues]]\nid = \"b\"\nname = \"B\"\nchannel = \"chat\"\n\n\
             [[queues]]\nid = \"b\"\nname = \"\"\nchannel = \"chat\"\n",
        );
        assert_eq!(
            found,
            [
                (Some(1), "queues[0]: missing field `name`".to_owned()),
                (
                    Some(10),
                    "queues[2].id: duplicate id \"b\" (first used by queues[1])".to_owned()
                ),
                (Some(11), "queues[2].name must not be empty".to_owned()),
            ]
        );
    }

    #[test]
    fn a_rule_broken_by_a_default_points_at_the_key_the_file_sets() {
        let found = problems("[resilience]\n\nheartbeat_interval = \"20s\"\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, Some(3), "{found:#?}");
        assert!(found[0].1.starts_with("resilience.heartbeat_timeout (15s)"));
    }

    #[test]
    fn a_required_key_with_a_bad_value_is_reported_once() {
        let found = problems("[[queues]]\nid = \"q\"\nname = \"Q\"\nchannel = \"fax\"\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, Some(4));
        assert!(
            found[0]
                .1
                .starts_with("queues[0].channel: unknown variant `fax`")
        );
        let found = problems("[server.tls]\ncert = 5\nkey = \"k.pem\"\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].1.starts_with("server.tls.cert: invalid type"),
            "{found:#?}"
        );
    }

    #[test]
    fn a_list_that_is_not_tables_is_reported_once() {
        let found = problems("queues = 5\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, Some(1));
        assert!(
            found[0].1.starts_with("queues: expected [[queues]] tables"),
            "{found:#?}"
        );
    }

    #[test]
    fn syntax_errors_are_reported_alone_with_line_and_column() {
        let e = read("[server]\nhttp_listen = \"abc\n[sip]\nrealm = 1 2\n[[agents]]\nid = 5\n")
            .unwrap_err();
        let located = e.located();
        assert!(matches!(e, ConfigError::Parse { .. }));
        assert_eq!(
            located.iter().map(|p| p.line).collect::<Vec<_>>(),
            [Some(2), Some(4)],
            "{e}"
        );
        assert!(
            located
                .iter()
                .all(|p| p.column.is_some() && p.message.starts_with("not valid TOML: "))
        );
    }

    #[test]
    fn a_valid_file_reads_without_problems() {
        let text = format!(
            "[[queues]]\nid = \"q\"\nname = \"Q\"\nchannel = \"chat\"\n\n\
             [[agents]]\nid = \"a\"\nname = \"A\"\npassword_hash = \"{HASH}\"\n\
             sip_password = \"x\"\nqueues = [\"q\"]\n\n\
             [[api_keys]]\nid = \"k\"\nkey_sha256 = \"{}\"\n",
            "AB".repeat(32)
        );
        let c = read(&text).unwrap();
        assert_eq!(c.agents[0].queues, ["q"]);
        assert_eq!(c.api_keys[0].key_sha256, "ab".repeat(32));
    }

    #[test]
    fn positions_count_characters_from_one() {
        assert_eq!(position("ab\ncé=x", 0), (1, 1));
        assert_eq!(position("ab\ncé=x", 3), (2, 1));
        assert_eq!(position("ab\ncé=x", 6), (2, 3));
    }

    #[test]
    fn renumbering_maps_read_entries_to_their_file_index() {
        let kept = [("queues", vec![1, 2])];
        assert_eq!(
            renumber("queues[1].id: duplicate (first used by queues[0])", &kept),
            "queues[2].id: duplicate (first used by queues[1])"
        );
        assert_eq!(
            renumber("agents[0].queues: x", &kept),
            "agents[0].queues: x"
        );
    }

    #[test]
    fn a_key_path_is_mentioned_only_as_a_whole() {
        assert!(mentions(
            "sip.min_expires (5s) is greater",
            "sip.min_expires"
        ));
        assert!(!mentions("sip.min_expires_x", "sip.min_expires"));
        assert!(!mentions("x.sip.min_expires", "sip.min_expires"));
        assert!(mentions("queues[1].id: dup", "queues[1]"));
        assert!(!mentions("queues[10].id: dup", "queues[1]"));
    }
}
