//! `cdktr-agent`: runs a workflow on this machine, streams its output to
//! the principal and records its statuses; exits 0 when it completed, 1
//! when it failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use cdktr_agent::{Agent, AgentConfig, Task, Workflow};
use cdktr_log::RunStatus;
use clap::{Arg, ArgAction, ArgGroup, Command};

fn cli() -> Command {
    Command::new("cdktr-agent")
        .about("Runs cdktr workflows, streaming their output to the principal")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .after_help(
            "The principal is found through CDKTR_PRINCIPAL_HOST, CDKTR_PRINCIPAL_PORT and\n\
             CDKTR_LOGS_LISTENING_PORT; see README.md for the other variables.",
        )
        .subcommand(
            Command::new("run")
                .about("Run one command as a workflow, or a workflow file")
                .override_usage(
                    "cdktr-agent run --workflow-id ID [--workflow-name NAME] [--task NAME] -- CMD [ARGS...]\n       \
                     cdktr-agent run --file WORKFLOW.yaml",
                )
                .arg(
                    Arg::new("file")
                        .long("file")
                        .short('f')
                        .value_name("WORKFLOW.yaml")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("Run the workflow this file describes (format: README.md)"),
                )
                .arg(
                    Arg::new("workflow-id")
                        .long("workflow-id")
                        .value_name("ID")
                        .help("The workflow's id"),
                )
                .arg(
                    Arg::new("workflow-name")
                        .long("workflow-name")
                        .value_name("NAME")
                        .requires("workflow-id")
                        .help("The workflow's name (default: its id)"),
                )
                .arg(
                    Arg::new("task")
                        .long("task")
                        .value_name("NAME")
                        .requires("workflow-id")
                        .help("The task's name (default: the command's)"),
                )
                .arg(
                    Arg::new("command")
                        .value_name("CMD")
                        .num_args(1..)
                        .last(true)
                        .action(ArgAction::Set)
                        .requires("workflow-id")
                        .help("The command and its arguments, after --"),
                )
                .group(ArgGroup::new("what").args(["file", "workflow-id"]).required(true))
                .group(ArgGroup::new("one").args(["file", "command"]).required(true)),
        )
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let matches = cli().get_matches();
    let Some(("run", m)) = matches.subcommand() else {
        return ExitCode::from(2);
    };
    match run(m) {
        Ok(RunStatus::Completed) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cdktr-agent: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(m: &clap::ArgMatches) -> Result<RunStatus, Box<dyn std::error::Error>> {
    let workflow = match m.get_one::<PathBuf>("file") {
        Some(path) => Workflow::from_file(path)?,
        None => {
            let id = m.get_one::<String>("workflow-id").cloned().unwrap_or_default();
            let mut command = m.get_many::<String>("command").into_iter().flatten().cloned();
            let program = command.next().ok_or("no command given after --")?;
            let name = m.get_one::<String>("task").cloned().unwrap_or_else(|| {
                std::path::Path::new(&program)
                    .file_name()
                    .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned())
            });
            Workflow {
                workflow_id: id,
                workflow_name: m.get_one::<String>("workflow-name").cloned(),
                tasks: vec![Task::new(name, program, command)],
            }
        }
    };
    workflow.check()?;

    // Registered before anything starts, so that an early signal is seen.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let agent = Agent::start(AgentConfig::from_env()?)?;
    let instance = agent.new_instance_id(&workflow.workflow_id);
    println!("cdktr-agent: workflow {} instance {instance}", workflow.workflow_id);
    let report = agent.run_as(&workflow, &instance, &stop)?;
    for t in &report.tasks {
        println!(
            "cdktr-agent: task {} {} ({:?}, {:.3}s)",
            t.name,
            t.status,
            t.outcome,
            t.duration.as_secs_f64()
        );
    }
    println!("cdktr-agent: instance {instance} {}", report.status);
    let done = agent.shutdown()?;
    if done.statuses_undelivered > 0 || done.logs.left_in_spool > 0 {
        eprintln!(
            "cdktr-agent: the principal did not take everything in time: {} status update(s) lost, \
             {} log line(s) kept in the spool for the next agent",
            done.statuses_undelivered, done.logs.left_in_spool
        );
    }
    Ok(report.status)
}
