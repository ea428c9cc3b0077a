//! Model and dataset cards: the YAML front matter of `README.md`, checked the way the Hub's
//! `validate-yaml` does before an upload.

use yaml_rust2::{Yaml, YamlLoader};

/// What validating a card found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CardCheck {
    /// Problems that make the card invalid.
    pub errors: Vec<String>,
    /// Things worth telling the uploader that do not block.
    pub warnings: Vec<String>,
}

/// The largest card checked; the Hub's own limit is far below this.
const MAX_CARD_BYTES: usize = 1024 * 1024;

/// Extracts the front matter text between a leading `---` line and the next `---` line.
pub fn front_matter(content: &str) -> Option<&str> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let rest = content.strip_prefix("---\n").or_else(|| content.strip_prefix("---\r\n"))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some(&rest[..offset]);
        }
        offset += line.len();
    }
    None
}

/// Checks a card: front matter, if any, must be a YAML mapping.
pub fn check_card(content: &str) -> CardCheck {
    let mut check = CardCheck::default();
    if content.len() > MAX_CARD_BYTES {
        check.errors.push(format!("README.md is larger than {MAX_CARD_BYTES} bytes"));
        return check;
    }
    let Some(yaml) = front_matter(content) else {
        if content.starts_with("---") {
            check.errors.push("the metadata block opened with '---' is never closed".to_owned());
        } else {
            check.warnings.push("empty or missing yaml metadata in repo card".to_owned());
        }
        return check;
    };
    match YamlLoader::load_from_str(yaml) {
        Err(err) => check.errors.push(format!("invalid YAML in the metadata block: {err}")),
        Ok(docs) => match docs.first() {
            None | Some(Yaml::Null) => check.warnings.push("empty or missing yaml metadata in repo card".to_owned()),
            Some(Yaml::Hash(map)) => {
                if let Some(license) = map.get(&Yaml::String("license".into())) {
                    if !matches!(license, Yaml::String(_) | Yaml::Array(_)) {
                        check.errors.push("\"license\" must be a string or a list of strings".to_owned());
                    }
                }
            }
            Some(_) => check.errors.push("the metadata block must be a YAML mapping (key: value)".to_owned()),
        },
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(content: &str, errors: usize, warnings: usize) {
        let got = check_card(content);
        assert_eq!((got.errors.len(), got.warnings.len()), (errors, warnings), "{content:?}: {got:?}");
    }

    #[test]
    fn cards() {
        check("---\nlicense: apache-2.0\ntags: [a, b]\n---\n# Model\n", 0, 0);
        check("# No metadata\n", 0, 1);
        check("---\n---\ntext", 0, 1);
        check("---\nlicense: [unclosed\n---\n", 1, 0);
        check("---\n- a list\n---\n", 1, 0);
        check("---\nlicense: {a: 1}\n---\n", 1, 0);
        check("---\nlicense: mit\n", 1, 0);
        check("\u{feff}---\r\nlicense: mit\r\n---\r\n", 0, 0);
    }
}
