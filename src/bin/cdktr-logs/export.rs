//! `cdktr-logs export`: the lines `query` would print, hot and archived,
//! into a Parquet, CSV or JSON-lines file, a page at a time.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use cdktr_log::query::Origin;
use cdktr_log::LogMessage;
use clap::{value_parser, Arg, ArgMatches, Command};

use crate::sql::csv_field;
use crate::{Principal, Result};

/// The formats a file can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Parquet,
    Csv,
    JsonLines,
}

impl Format {
    fn parse(name: &str) -> Option<Format> {
        match name {
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
            _ => None,
        }
    }

    fn of(path: &Path) -> Option<Format> {
        Format::parse(&path.extension()?.to_string_lossy().to_lowercase())
    }
}

pub fn command() -> Command {
    crate::query::filters(
        Command::new("export")
            .about("Write stored lines (hot and archived) to a Parquet, CSV or JSON-lines file, oldest first"),
    )
    .arg(
        Arg::new("file")
            .required(true)
            .value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .help("The file to write: .parquet, .csv, .jsonl"),
    )
    .arg(
        Arg::new("format")
            .long("format")
            .value_parser(["parquet", "csv", "jsonl"])
            .help("The format, when the file's extension does not say it"),
    )
}

pub fn run(m: &ArgMatches, p: &Principal) -> Result {
    let path = m.get_one::<PathBuf>("file").ok_or("a file to write is needed")?;
    let format = match m.get_one::<String>("format") {
        Some(f) => Format::parse(f),
        None => Format::of(path),
    }
    .ok_or_else(|| format!("{}: say --format parquet, csv or jsonl", path.display()))?;
    let query = crate::query::filtered(m);
    let mut api = p.client()?;
    let total = api.count_logs(&query)?;
    let mut sink = Sink::create(path, format)?;
    let mut progress = Progress::new(total);
    for page in api.pages(query) {
        let page = page?;
        sink.write(&page.lines, &page.origins)?;
        progress.advance(page.lines.len() as u64);
    }
    let written = sink.finish()?;
    progress.done();
    eprintln!("cdktr-logs: exported {written} lines to {}", path.display());
    Ok(())
}

/// Where pages go.
enum Sink {
    #[cfg(feature = "store")]
    Parquet(Option<cdktr_store::export::ParquetExport>),
    Text {
        out: BufWriter<File>,
        tmp: PathBuf,
        path: PathBuf,
        format: Format,
        lines: u64,
    },
}

impl Sink {
    fn create(path: &Path, format: Format) -> Result<Sink> {
        if format == Format::Parquet {
            #[cfg(feature = "store")]
            return Ok(Sink::Parquet(Some(cdktr_store::export::ParquetExport::create(path)?)));
            #[cfg(not(feature = "store"))]
            return Err(
                "this cdktr-logs was built without DuckDB (--no-default-features): it writes CSV and \
                        JSON lines, not Parquet"
                    .into(),
            );
        }
        // Written under a temporary name: the file appears whole or not at all.
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.partial"));
        let file = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut out = BufWriter::new(file);
        if format == Format::Csv {
            writeln!(
                out,
                "timestamp,workflow_id,workflow_name,workflow_instance_id,task_name,task_instance_id,level,payload,publisher_id,seq"
            )?;
        }
        Ok(Sink::Text {
            out,
            tmp,
            path: path.to_path_buf(),
            format,
            lines: 0,
        })
    }

    fn write(&mut self, lines: &[LogMessage], origins: &[Option<Origin>]) -> Result {
        match self {
            #[cfg(feature = "store")]
            Sink::Parquet(p) => p.as_mut().ok_or("the export is finished")?.append(lines, origins)?,
            Sink::Text {
                out, format, lines: n, ..
            } => {
                for (i, m) in lines.iter().enumerate() {
                    let origin = origins.get(i).and_then(Option::as_ref);
                    if *format == Format::JsonLines {
                        writeln!(out, "{}", m.to_json())?;
                    } else {
                        let time = chrono::DateTime::from_timestamp_millis(m.timestamp_ms)
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                            .unwrap_or_else(|| m.timestamp_ms.to_string());
                        let fields = [
                            time,
                            csv_field(&m.workflow_id),
                            csv_field(&m.workflow_name),
                            csv_field(&m.workflow_instance_id),
                            csv_field(&m.task_name),
                            csv_field(&m.task_instance_id),
                            m.level.as_str().to_owned(),
                            csv_field(&m.payload),
                            origin.map(|o| csv_field(&o.publisher_id)).unwrap_or_default(),
                            origin.map(|o| o.seq.to_string()).unwrap_or_default(),
                        ];
                        writeln!(out, "{}", fields.join(","))?;
                    }
                }
                *n += lines.len() as u64;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<u64> {
        match self {
            #[cfg(feature = "store")]
            Sink::Parquet(p) => Ok(p.take().ok_or("the export is finished")?.finish()?),
            Sink::Text {
                out, tmp, path, lines, ..
            } => {
                out.flush()?;
                out.get_ref().sync_all()?;
                std::fs::rename(tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(*lines)
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Sink::Text { tmp, .. } = self {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A bar on standard error, when it is a terminal.
struct Progress {
    total: u64,
    done: u64,
    shown: bool,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            total,
            done: 0,
            shown: std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if !self.shown {
            return;
        }
        let part = if self.total == 0 {
            1.0
        } else {
            (self.done as f64 / self.total as f64).min(1.0)
        };
        let filled = (part * 30.0) as usize;
        eprint!(
            "\r[{}{}] {:>3}% {}/{} lines",
            "#".repeat(filled),
            "-".repeat(30 - filled),
            (part * 100.0) as u32,
            self.done,
            self.total
        );
    }

    fn done(&self) {
        if self.shown {
            eprintln!();
        }
    }
}
