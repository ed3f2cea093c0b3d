//! Reading YAML files with located errors (file:line:column, field): the configuration and the
//! policy both load through here. A leaf: depends on nothing else in the crate.
pub mod locate;

use std::fmt;
use std::path::Path;

/// One problem in a configuration file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    /// An error at a field of a YAML file, located by its path (`["services", "0", "match"]`).
    pub fn at(file: &str, text: &str, path: &[&str], message: String) -> Self {
        let pos = locate::locate(text, path);
        Self {
            file: file.to_string(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            field: path.join("."),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}: {}", self.field, self.message)
    }
}

#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A file's name (for messages) and text, or a located read error.
pub fn read_file(path: &Path) -> Result<(String, String), ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((file, text)),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file,
            line: None,
            column: None,
            field: "-".into(),
            message: format!("cannot read: {e}"),
        }])),
    }
}

/// YAML into `T` (an empty file is `T::default()`), syntax and type errors located.
pub fn parse_yaml<T: serde::de::DeserializeOwned + Default>(
    file: &str,
    text: &str,
) -> Result<T, ConfigErrors> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_norway::from_str(text).map_err(|e| ConfigErrors(vec![located_serde_error(file, &e)]))
}

/// YAML (or JSON, which serde_norway reads too) into `T`, syntax and type errors located; an
/// empty file is an error like any other.
pub fn parse_yaml_strict<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, ConfigErrors> {
    serde_norway::from_str(text).map_err(|e| ConfigErrors(vec![located_serde_error(file, &e)]))
}

/// A serde_norway error as a located ConfigError (syntax and type errors carry a position).
pub fn located_serde_error(file: &str, e: &serde_norway::Error) -> ConfigError {
    let loc = e.location();
    let msg = e.to_string();
    // serde_norway prefixes the field path ("capture.bytes: ...") when it knows it.
    let (field, message) = match msg.split_once(": ") {
        Some((f, m)) if !f.contains(' ') => (f.to_string(), m.to_string()),
        _ => ("-".to_string(), msg.clone()),
    };
    let message = message.split(" at line ").next().unwrap_or(&message).to_string();
    ConfigError {
        file: file.to_string(),
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
        field,
        message,
    }
}
