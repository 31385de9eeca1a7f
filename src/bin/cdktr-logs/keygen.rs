//! `cdktr-logs keygen NAME`: a CURVE key pair as two certificate files.

use std::path::PathBuf;

use cdktr_log::curve::{KeyPair, Role};
use clap::{Arg, ArgMatches, Command};

use crate::Result;

pub fn command() -> Command {
    Command::new("keygen")
        .about("Write a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (public)")
        .long_about(
            "Write a CURVE key pair: NAME.key (both keys, mode 0600) and NAME.pub (the public key), in ZeroMQ's \
             certificate format. Give NAME.pub to the other side: a client's goes into the principal's \
             authorized keys directory (its --role decides what it may do); the principal's goes to its clients \
             (CDKTR_CURVE_SERVER_KEY). Existing files are never overwritten.",
        )
        .arg(
            Arg::new("name")
                .required(true)
                .value_name("NAME")
                .help("The key's name: file names and logs"),
        )
        .arg(
            Arg::new("dir")
                .long("dir")
                .value_name("DIR")
                .default_value(".")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Where to write the two files"),
        )
        .arg(
            Arg::new("role")
                .long("role")
                .value_parser(["publisher", "reader", "admin"])
                .help(
                    "A client's role, written into NAME.pub: publisher (agents), reader (CLI, TUI, subscribers), admin",
                ),
        )
}

pub fn run(m: &ArgMatches) -> Result {
    let name = m.get_one::<String>("name").map_or("", String::as_str);
    let dir = m
        .get_one::<PathBuf>("dir")
        .cloned()
        .unwrap_or_else(|| PathBuf::from("."));
    let role = m.get_one::<String>("role").map(|r| r.parse::<Role>()).transpose()?;
    let (secret, public) = KeyPair::generate()?.write(&dir, name, role)?;
    println!("{}\n{}", secret.display(), public.display());
    Ok(())
}
