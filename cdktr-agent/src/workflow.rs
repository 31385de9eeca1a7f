//! What a workflow is to the agent: an ordered list of tasks, each a
//! command; and the YAML file that describes one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cdktr_log::Level;
use serde::Deserialize;

use crate::error::{Error, Result};

/// One task: a command run with its arguments, working directory and
/// environment. Each line it writes becomes a log line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// The task's name (its id in the workflow).
    pub name: String,
    /// The program; looked up in `PATH` when it has no `/`.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory (default: the agent's).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Variables added to the agent's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Level of lines written to stdout (default INFO).
    #[serde(default = "info")]
    pub stdout_level: Level,
    /// Level of lines written to stderr (default WARN).
    #[serde(default = "warn")]
    pub stderr_level: Level,
    /// When this task fails, run the next ones anyway, and do not fail the
    /// workflow for it (default false).
    #[serde(default)]
    pub continue_on_failure: bool,
}

fn info() -> Level {
    Level::Info
}

fn warn() -> Level {
    Level::Warn
}

impl Task {
    /// A task running `command` with `args`, with the defaults.
    pub fn new(
        name: impl Into<String>,
        command: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Task {
        Task {
            name: name.into(),
            command: command.into(),
            args: args.into_iter().map(Into::into).collect(),
            dir: None,
            env: BTreeMap::new(),
            stdout_level: Level::Info,
            stderr_level: Level::Warn,
            continue_on_failure: false,
        }
    }

    /// A task running `script` with `sh -c`.
    pub fn shell(name: impl Into<String>, script: impl Into<String>) -> Task {
        Task::new(name, "sh", ["-c".to_string(), script.into()])
    }
}

/// A workflow definition: what `cdktr-agent run --file` reads.
///
/// ```yaml
/// workflow_id: nightly-etl
/// workflow_name: Nightly ETL        # optional, default: the id
/// tasks:
///   - name: extract
///     command: ./extract.sh
///     args: [--since, yesterday]    # optional
///     dir: /srv/etl                 # optional
///     env: {DB_URL: "postgres://"}  # optional
///     stderr_level: ERROR           # optional: stdout INFO, stderr WARN
///   - name: load
///     command: sh
///     args: [-c, "psql -f load.sql"]
///     continue_on_failure: true     # optional
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// The workflow's id.
    pub workflow_id: String,
    /// Its human-readable name.
    #[serde(default)]
    pub workflow_name: Option<String>,
    /// The tasks, run in this order.
    pub tasks: Vec<Task>,
}

impl Workflow {
    /// A workflow of one task.
    pub fn single(workflow_id: impl Into<String>, task: Task) -> Workflow {
        Workflow {
            workflow_id: workflow_id.into(),
            workflow_name: None,
            tasks: vec![task],
        }
    }

    /// The name to show: `workflow_name`, or the id.
    pub fn name(&self) -> &str {
        self.workflow_name.as_deref().unwrap_or(&self.workflow_id)
    }

    /// Reads a workflow file (the format above).
    ///
    /// # Errors
    /// [`Error::Read`]; [`Error::Parse`] with the line and column;
    /// [`Error::Invalid`] as [`check`](Self::check).
    pub fn from_file(path: &Path) -> Result<Workflow> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let w: Workflow = serde_saphyr::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        w.check()?;
        Ok(w)
    }

    /// Checks that the workflow can be run.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty id, no tasks, or a task with an
    /// empty name or command.
    pub fn check(&self) -> Result<()> {
        if self.workflow_id.trim().is_empty() {
            return Err(Error::Invalid("the workflow id is empty".into()));
        }
        if self.tasks.is_empty() {
            return Err(Error::Invalid("the workflow has no tasks".into()));
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if t.name.trim().is_empty() {
                return Err(Error::Invalid(format!("task {} has no name", i + 1)));
            }
            if t.command.is_empty() {
                return Err(Error::Invalid(format!("task {:?} has no command", t.name)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_file_reads_and_bad_ones_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        let doc = include_str!("workflow.rs");
        // The example in the doc comment above, minus the `///`.
        let yaml: String = doc
            .lines()
            .skip_while(|l| !l.contains("```yaml"))
            .skip(1)
            .take_while(|l| !l.contains("```"))
            .map(|l| {
                format!(
                    "{}\n",
                    l.trim_start().trim_start_matches("///").strip_prefix(' ').unwrap_or("")
                )
            })
            .collect();
        std::fs::write(&path, yaml).unwrap();
        let w = Workflow::from_file(&path).unwrap();
        assert_eq!(w.workflow_id, "nightly-etl");
        assert_eq!(w.name(), "Nightly ETL");
        assert_eq!(w.tasks.len(), 2);
        assert_eq!(w.tasks[0].args, ["--since", "yesterday"]);
        assert_eq!(w.tasks[0].stderr_level, Level::Error);
        assert_eq!(w.tasks[0].stdout_level, Level::Info);
        assert_eq!(w.tasks[0].env["DB_URL"], "postgres://");
        assert!(w.tasks[1].continue_on_failure);

        for (text, says) in [
            ("workflow_id: x\ntasks: []\n", "no tasks"),
            ("workflow_id: x\ntasks:\n  - name: a\n    comand: ls\n", "comand"),
            (
                "workflow_id: x\ntasks:\n  - name: a\n    command: ls\n    stdout_level: LOUD\n",
                "LOUD",
            ),
            ("workflow_id: [\n", "w.yaml"),
            ("workflow_id: ''\ntasks:\n  - {name: a, command: ls}\n", "id is empty"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Workflow::from_file(&path).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        let e = Workflow::from_file(&dir.path().join("missing.yaml")).unwrap_err();
        assert!(matches!(e, Error::Read { .. }), "{e}");
    }
}
