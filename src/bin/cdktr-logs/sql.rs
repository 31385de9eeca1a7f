//! `cdktr-logs sql`: one read-only statement over the live database and
//! its archive, as a table, JSON lines or CSV.

use cdktr_log::sql::{SqlRows, SqlValue};
use clap::{value_parser, Arg, ArgMatches, Command};

use crate::output::{Cell, Out};
use crate::ui::text::sanitize;
use crate::{Principal, Result};

pub fn command() -> Command {
    Command::new("sql")
        .about("Run one read-only SQL statement on the principal (log_history holds every line, hot and archived)")
        .arg(
            Arg::new("statement")
                .required(true)
                .value_name("SQL")
                .help("The statement, e.g. \"SELECT level, count(*) FROM log_history GROUP BY ALL\""),
        )
        .arg(
            Arg::new("output")
                .short('o')
                .long("output")
                .value_parser(["table", "json", "csv"])
                .default_value("table")
                .help("Output format: a table, one JSON object per row, or CSV with a header"),
        )
        .arg(
            Arg::new("max-rows")
                .long("max-rows")
                .value_name("N")
                .value_parser(value_parser!(u64).range(1..))
                .help("Most rows to return (the principal caps it at 10000)"),
        )
}

pub fn run(m: &ArgMatches, p: &Principal, out: &mut Out) -> Result {
    let statement = m.get_one::<String>("statement").map_or("", String::as_str);
    let max_rows = m.get_one::<u64>("max-rows").copied();
    let result = p.client()?.sql(statement, max_rows)?;
    let written = match m.get_one::<String>("output").map(String::as_str) {
        Some("json") => json(&result, out),
        Some("csv") => csv(&result, out),
        _ => table(&result, out),
    };
    if written {
        if let Some(why) = &result.truncated {
            eprintln!("cdktr-logs: truncated: {why}");
        }
    }
    Ok(())
}

/// A cell as one line of plain text: control characters are escaped, so a
/// hostile value cannot move the cursor or forge a row.
fn cell_text(v: &SqlValue) -> String {
    match v {
        SqlValue::Null => "NULL".into(),
        other => sanitize(&other.to_text()),
    }
}

fn table(r: &SqlRows, out: &mut Out) -> bool {
    let mut rows = Vec::with_capacity(r.rows.len() + 1);
    rows.push(r.columns.iter().map(|c| Cell::header(sanitize(&c.name))).collect());
    rows.extend(
        r.rows
            .iter()
            .map(|row| row.iter().map(|v| Cell::plain(cell_text(v))).collect()),
    );
    out.table(&rows)
        && out.line(format_args!(
            "({} row{})",
            r.rows.len(),
            if r.rows.len() == 1 { "" } else { "s" }
        ))
}

fn json(r: &SqlRows, out: &mut Out) -> bool {
    for row in &r.rows {
        let mut line = String::from("{");
        for (i, (c, v)) in r.columns.iter().zip(row).enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&serde_json::to_string(&c.name).unwrap_or_default());
            line.push(':');
            line.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "null".into()));
        }
        line.push('}');
        if !out.line(format_args!("{line}")) {
            return false;
        }
    }
    true
}

/// RFC 4180: a field with a comma, quote or line break is quoted, quotes
/// doubled; NULL is an empty field.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv(r: &SqlRows, out: &mut Out) -> bool {
    let header: Vec<String> = r.columns.iter().map(|c| csv_field(&c.name)).collect();
    if !out.line(format_args!("{}", header.join(","))) {
        return false;
    }
    for row in &r.rows {
        let fields: Vec<String> = row.iter().map(|v| csv_field(&v.to_text())).collect();
        if !out.line(format_args!("{}", fields.join(","))) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_quote_commas_quotes_and_line_breaks() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn table_cells_escape_control_characters() {
        let hostile = SqlValue::Text("ok\x1b[2J\nforged row".into());
        assert_eq!(cell_text(&hostile), "ok\\u{1b}[2J\\nforged row");
        assert_eq!(cell_text(&SqlValue::Null), "NULL");
        assert_eq!(cell_text(&SqlValue::Text("café \"q\"".into())), "café \"q\"");
    }
}
