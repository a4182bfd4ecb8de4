//! `fnetc`: the command-line front end.

use clap::{Parser, Subcommand, ValueEnum};
use fnet::diag::Report;
use fnet::driver::compile_file;
use fnet::eval::{Module, Options};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fnetc",
    version,
    about = "Compile, check and run .fnet convolutional network models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Type-check a model and summarise its inputs, outputs, layers and parameters.
    Check {
        /// The .fnet model file.
        file: PathBuf,
        /// Print a machine-readable JSON summary instead of the table.
        #[arg(long)]
        json: bool,
        /// Pooling-slot configuration: comma-separated 1-based slot numbers that
        /// downsample (e.g. `4,7`). Defaults to the model's declared default.
        #[arg(long, value_delimiter = ',')]
        config: Option<Vec<u64>>,
        /// Override a model-level constant, e.g. `--set E=8` (repeatable).
        #[arg(long = "set", value_parser = parse_set)]
        set: Vec<(String, String)>,
    },
    /// Compile a model and print the requested intermediate form.
    Compile {
        /// The .fnet model file.
        file: PathBuf,
        /// What to print.
        #[arg(long, value_enum, default_value_t = Emit::Ir)]
        emit: Emit,
        /// Pooling-slot configuration (see `check --help`).
        #[arg(long, value_delimiter = ',')]
        config: Option<Vec<u64>>,
        /// Override a model-level constant, e.g. `--set E=8` (repeatable).
        #[arg(long = "set", value_parser = parse_set)]
        set: Vec<(String, String)>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// The typed graph IR.
    Ir,
    /// The syntax tree (debug form).
    Ast,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            for d in &report.diagnostics {
                eprint!("{}", d.render_styled(&report.source, color));
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Report> {
    match cli.command {
        Command::Check {
            file,
            json,
            config,
            set,
        } => {
            let (_, module) = compile_file(
                &file,
                &Options {
                    slot_config: config,
                    overrides: set,
                },
            )?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&fnet::summary::json(&module))
                        .expect("JSON of plain data")
                );
            } else {
                print!(
                    "{}",
                    fnet::summary::table(&module, &file.display().to_string())
                );
            }
        }
        Command::Compile {
            file,
            emit,
            config,
            set,
        } => {
            let options = Options {
                slot_config: config,
                overrides: set,
            };
            match emit {
                Emit::Ir => {
                    let (_, module): (_, Module) = compile_file(&file, &options)?;
                    print!("{}", fnet::ir::print::print_graph(&module.graph));
                }
                Emit::Ast => {
                    let (source, _) = compile_file(&file, &options)?;
                    let program =
                        fnet::syntax::parse_program(&source.text).map_err(|d| Report {
                            source: source.clone(),
                            diagnostics: vec![d],
                        })?;
                    println!("{program:#?}");
                }
            }
        }
    }
    Ok(())
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{s}`")),
    }
}
