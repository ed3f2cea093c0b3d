//! Where a field is in a block-style YAML file, for error messages: `services.1.endpoints.0.methods`
//! -> line 14, column 9. serde's YAML errors carry a position only for syntax and type errors;
//! validation errors found after parsing are located with this.

struct Line {
    no: usize,
    indent: usize,
    /// A sequence item starts here ("- ").
    item: bool,
    /// The mapping key on this line (after any "- "), and its column.
    key: Option<(String, usize)>,
}

fn lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut rest = trimmed;
        let item = rest.starts_with("- ") || rest == "-";
        if item {
            out.push(Line {
                no: i + 1,
                indent,
                item: true,
                key: None,
            });
            rest = rest[1..].trim_start();
            indent = raw.len() - rest.len();
            if rest.is_empty() {
                continue;
            }
        }
        let key = rest
            .split_once(':')
            .filter(|(k, _)| !k.is_empty() && !k.contains(['{', '[', '"', '\'']) && !k.contains(' '))
            .map(|(k, _)| (k.to_string(), indent + 1));
        out.push(Line {
            no: i + 1,
            indent,
            item: false,
            key,
        });
    }
    out
}

/// 1-based (line, column) of the node at `path` (keys, and decimal indices into sequences).
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let all = lines(text);
    let (mut lo, mut hi) = (0, all.len());
    let mut found = None;
    for seg in path {
        let level = all[lo..hi].iter().map(|l| l.indent).min()?;
        let pos = if let Ok(n) = seg.parse::<usize>() {
            all[lo..hi]
                .iter()
                .enumerate()
                .filter(|(_, l)| l.item && l.indent == level)
                .nth(n)
                .map(|(i, _)| lo + i)
        } else {
            all[lo..hi]
                .iter()
                .enumerate()
                .find(|(_, l)| !l.item && l.indent == level && l.key.as_ref().is_some_and(|(k, _)| k == seg))
                .map(|(i, _)| lo + i)
        }?;
        let node = &all[pos];
        found = Some((
            node.no,
            node.key.as_ref().map(|(_, c)| *c).unwrap_or(node.indent + 1),
        ));
        // The node's children: the following lines indented deeper than it (an item's own first
        // key sits on the item's line, just after the dash).
        let end = all[pos + 1..]
            .iter()
            .position(|l| l.indent < node.indent || (l.indent == node.indent && (l.item || !node.item)))
            .map(|k| pos + 1 + k)
            .unwrap_or(hi)
            .min(hi);
        lo = pos + 1;
        hi = end;
        if lo >= hi && seg != path.last().unwrap_or(&"") {
            return found;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "zones:\n  internal: [10.0.0.0/8]\nservices:\n  - name: a\n    match:\n      port: 80\n  - name: b\n    endpoints:\n      - route: /x\n        methods: [GET]\n      - route: /y\n        methods: [PUT]\n";

    #[test]
    fn locates_keys_and_items() {
        assert_eq!(locate(DOC, &["zones", "internal"]), Some((2, 3)));
        assert_eq!(locate(DOC, &["services", "0", "match", "port"]), Some((6, 7)));
        assert_eq!(locate(DOC, &["services", "1", "name"]), Some((7, 5)));
        assert_eq!(
            locate(DOC, &["services", "1", "endpoints", "1", "methods"]),
            Some((12, 9))
        );
        assert_eq!(
            locate(DOC, &["services", "1", "endpoints", "0", "route"]),
            Some((9, 9))
        );
        assert_eq!(locate(DOC, &["services", "2"]), None);
    }
}
