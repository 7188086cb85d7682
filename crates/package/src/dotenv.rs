//! Parsing a package's `.env` file (values may be secrets: never logged).

use std::collections::BTreeMap;

/// Parses `.env` text: `KEY=VALUE` lines, `#` comments, blank lines, an optional
/// `export ` prefix, single-quoted (literal) and double-quoted (escapes) values.
/// Unquoted values lose a trailing ` # comment`. Lines that are not assignments are
/// skipped; their 1-based numbers are returned (never their content).
pub fn parse_dotenv(text: &str) -> (BTreeMap<String, String>, Vec<usize>) {
    let mut vars = BTreeMap::new();
    let mut bad = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            bad.push(i + 1);
            continue;
        };
        let key = key.trim();
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        if !key_ok {
            bad.push(i + 1);
            continue;
        }
        vars.insert(key.to_string(), unquote(value.trim()));
    }
    (vars, bad)
}

fn unquote(v: &str) -> String {
    let b = v.as_bytes();
    if b.len() >= 2 && b[0] == b'\'' {
        if let Some(end) = v[1..].find('\'') {
            return v[1..1 + end].to_string();
        }
    }
    if b.len() >= 2 && b[0] == b'"' {
        let mut out = String::new();
        let mut chars = v[1..].chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return out,
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(o) => out.push(o),
                    None => out.push('\\'),
                },
                c => out.push(c),
            }
        }
        // No closing quote: keep the text as written.
        return v.to_string();
    }
    match v.find(" #") {
        Some(i) => v[..i].trim_end().to_string(),
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_write() {
        let text = "# c\n\nA=1\nexport B = two \nQ=\"q v\"\nS='single # kept'\nE=\"a\\\"b\\nc\"\nC=x # note\nEMPTY=\nnot a line\n=v\n";
        let (vars, bad) = parse_dotenv(text);
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two");
        assert_eq!(vars["Q"], "q v");
        assert_eq!(vars["S"], "single # kept");
        assert_eq!(vars["E"], "a\"b\nc");
        assert_eq!(vars["C"], "x");
        assert_eq!(vars["EMPTY"], "");
        assert_eq!(bad, vec![10, 11]);
        assert_eq!(vars.len(), 7);
    }
}
