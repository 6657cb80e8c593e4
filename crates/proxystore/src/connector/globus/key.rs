//! The format of a Globus key: `<name>:<task id>[,<task id>...]`, the object's file name and
//! the Transfer tasks that carry it to the other endpoints.

use super::KIND;
use crate::connector::object_dir::name_problem;
use crate::error::{Error, Result};
use crate::key::Key;

/// A parsed key: the object's file name and the ids of the tasks that transfer it.
pub(super) struct GlobusKey {
    /// The object's file name in each endpoint's directory.
    pub(super) name: String,
    /// The tasks that transfer it, in the order they were submitted.
    pub(super) tasks: Vec<String>,
}

impl GlobusKey {
    /// Parse `<name>:<task id>[,<task id>...]`. The name follows the rules of every object
    /// directory (a plain file name, no temporary or reserved prefix); task ids go into URL
    /// paths (see [`is_task_id`]).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] of this connector saying why.
    pub(super) fn parse(key: &Key) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidKey {
            connector: KIND.into(),
            key: key.as_str().to_owned(),
            reason: reason.into(),
        };
        let (name, tasks) = key
            .as_str()
            .split_once(':')
            .ok_or_else(|| invalid("not <name>:<task ids>"))?;
        if let Some(reason) = name_problem(name) {
            return Err(invalid(&format!("object name: {reason}")));
        }
        let tasks: Vec<String> = tasks.split(',').map(str::to_owned).collect();
        if !tasks.iter().all(|t| is_task_id(t)) {
            return Err(invalid("task ids must be UUID-like"));
        }
        Ok(GlobusKey {
            name: name.to_owned(),
            tasks,
        })
    }

    /// The key of object `name` carried by `tasks`.
    pub(super) fn to_key(name: &str, tasks: &[String]) -> Key {
        Key::from(format!("{name}:{}", tasks.join(",")))
    }
}

/// Task ids go into URL paths: letters, digits and dashes only.
pub(super) fn is_task_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_refuse_hostile_parts() {
        let k = GlobusKey::parse(&Key::from("obj-1:t-1,t-2")).unwrap();
        assert_eq!(k.name, "obj-1");
        assert_eq!(k.tasks, ["t-1", "t-2"]);
        assert_eq!(
            GlobusKey::to_key("obj-1", &k.tasks).as_str(),
            "obj-1:t-1,t-2"
        );
        for bad in [
            "",
            "no-tasks",
            "obj:",
            ":t1",
            "../x:t1",
            "a/b:t1",
            "..:t1",
            ".tmp-x:t1",
            "obj:../../etc",
            "obj:t1/..",
            "obj:t1?x=1",
            "obj:t1,,t2",
            "nul\0:t1",
        ] {
            let e = GlobusKey::parse(&Key::from(bad)).err();
            assert!(
                matches!(&e, Some(Error::InvalidKey { connector, .. }) if connector == KIND),
                "{bad:?} gave {e:?}"
            );
        }
    }
}
