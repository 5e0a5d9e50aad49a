//! A netrc file (`netrc-file`): the login and password to send to each
//! HTTP host, read as curl reads it for Nix — `machine HOST`, `default`,
//! `login`, `password`, `account`, and `macdef` bodies skipped to the next
//! blank line; words separated by white space, or in double quotes.

use std::path::Path;

/// One `machine` (or `default`) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The host; `None` for `default`.
    machine: Option<String>,
    login: String,
    password: String,
}

/// The credentials of a netrc file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netrc {
    entries: Vec<Entry>,
}

impl Netrc {
    /// Reads the netrc file at `file`; a file that is missing or cannot be
    /// read gives no credentials, as curl's optional netrc does.
    pub fn read(file: &Path) -> Netrc {
        std::fs::read_to_string(file)
            .map(|text| Netrc::parse(&text))
            .unwrap_or_default()
    }

    /// Parses a netrc file's text.
    pub fn parse(text: &str) -> Netrc {
        let mut entries: Vec<Entry> = Vec::new();
        let mut lines = text.lines();
        let mut words: Vec<String> = Vec::new();
        while let Some(line) = lines.next() {
            words.extend(split_words(line));
            // A macro's body runs to the next blank line and is not netrc.
            if let Some(at) = words.iter().position(|w| w == "macdef") {
                words.truncate(at);
                for body in lines.by_ref() {
                    if body.trim().is_empty() {
                        break;
                    }
                }
            }
        }
        let mut words = words.into_iter();
        while let Some(word) = words.next() {
            match word.as_str() {
                "machine" => entries.push(Entry {
                    machine: Some(words.next().unwrap_or_default()),
                    login: String::new(),
                    password: String::new(),
                }),
                "default" => entries.push(Entry {
                    machine: None,
                    login: String::new(),
                    password: String::new(),
                }),
                "login" | "password" | "account" => {
                    let value = words.next().unwrap_or_default();
                    if let Some(entry) = entries.last_mut() {
                        match word.as_str() {
                            "login" => entry.login = value,
                            "password" => entry.password = value,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Netrc { entries }
    }

    /// The login and password for `host`: its `machine` entry, else the
    /// `default` one.
    pub fn credentials(&self, host: &str) -> Option<(&str, &str)> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.machine.as_deref() == Some(host))
            .or_else(|| self.entries.iter().find(|e| e.machine.is_none()))?;
        Some((&entry.login, &entry.password))
    }
}

/// A line's words: runs of non-space, or double-quoted with `\` escapes.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => word.extend(chars.next()),
                    c => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_gets_its_machine_entry_else_the_default() {
        let netrc = Netrc::parse(
            "machine cache.example.org login alice password s3cret\n\
             macdef init\ncd /pub\nmachine evil login x password y\n\n\
             machine other.example.org\n  login \"bob smith\"\n  password \"p\\\"w\"\n\
             default login anon password guest\n",
        );
        assert_eq!(
            netrc.credentials("cache.example.org"),
            Some(("alice", "s3cret"))
        );
        assert_eq!(
            netrc.credentials("other.example.org"),
            Some(("bob smith", "p\"w"))
        );
        assert_eq!(netrc.credentials("evil"), Some(("anon", "guest")));
        assert_eq!(Netrc::parse("machine a login b").credentials("c"), None);
        assert_eq!(
            Netrc::read(Path::new("/nonexistent/netrc")),
            Netrc::default()
        );
    }
}
